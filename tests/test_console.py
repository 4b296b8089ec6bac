"""The operator console through the app: sign-in and its cookie, the guards on every POST,
the user page and its timeline, actions and their audit. The browser run is test_console_browser."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge.web.console import COOKIE_NAME
from support import leaks as support_leaks
from support.app import Clock, bridge_of, login
from support.config import make_settings

ALICE = "alice-console-token-0123456789abcdefghijklm"
BOB = "bob-console-token-0123456789abcdefghijklmnop"
support_leaks.always(ALICE)
support_leaks.always(BOB)
ENV = {"BRIDGE_ADMIN_TOKENS": f"alice:{ALICE},bob:{BOB}"}
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


@pytest.fixture
async def console_app(make_app: Any) -> AsyncIterator[Quart]:
    application = make_app(make_settings(env=ENV))
    async with application.test_app():
        yield application


async def visit(app: Quart, user: str = "visitor") -> tuple[Client, str]:
    client = app.test_client()
    login(client, app, user)
    response = await client.get("/request_tokens")
    assert response.status_code == 200
    return client, (await response.get_json())["tokens"]["refreshToken"]


async def signed_in(app: Quart, token: str = ALICE) -> Client:
    client = app.test_client()
    response = await client.post("/admin/sign-in", form={"token": token})
    assert response.status_code == 303, await response.get_data()
    return client


async def csrf_of(client: Client, user: str = "visitor") -> str:
    page = await client.get("/admin/console/user", query_string={"user": user})
    match = CSRF.search((await page.get_data()).decode())
    assert match
    return match[1]


async def audit_of(app: Quart) -> list[dict[str, Any]]:
    store = bridge_of(app).store
    return await store.list_range(store.key("audit"), 100)


# --- signing in -------------------------------------------------------------------------------


async def test_signed_out_the_console_shows_only_the_sign_in_form(console_app: Quart) -> None:
    response = await console_app.test_client().get("/admin/")
    assert response.status_code == 200
    text = (await response.get_data()).decode()
    assert 'type="password"' in text and 'action="/admin/sign-in"' in text
    assert "Revoke" not in text and "csrf_token" not in text
    redirected = await console_app.test_client().get("/admin/console/user?user=visitor")
    assert redirected.status_code == 303 and redirected.headers["Location"] == "/admin/"


@pytest.mark.integration
def test_the_console_answers_with_and_without_the_slash(live_bridge_factory: Any) -> None:
    import httpx

    server, _ = live_bridge_factory(make_settings(env=ENV))
    for path in ("/admin", "/admin/", "/admin?x=1"):
        response = httpx.get(server.url + path)
        # Not werkzeug's slash redirect: it is no Quart answer, and a 500 in test_hostile_live.
        assert response.status_code == 200, path
        assert "Admin token" in response.text


async def test_sign_in_sets_the_consoles_own_strict_httponly_cookie(console_app: Quart) -> None:
    response = await console_app.test_client().post("/admin/sign-in", form={"token": BOB})
    assert response.status_code == 303 and response.headers["Location"] == "/admin/"
    [cookie] = response.headers.getlist("Set-Cookie")
    name, _, rest = cookie.partition("=")
    assert name == COOKIE_NAME
    attributes = [a.strip().lower() for a in rest.split(";")[1:]]
    assert "httponly" in attributes and "samesite=strict" in attributes
    assert "path=/admin" in attributes
    assert "secure" not in attributes  # served over http here
    assert BOB not in cookie
    [entry] = await audit_of(console_app)
    assert (entry["actor"], entry["via"], entry["action"]) == ("bob", "console", "console_sign_in")
    stored = [k for k in bridge_of(console_app).store.snapshot() if ":console:" in k]
    assert len(stored) == 1 and rest.split(";")[0] not in stored[0]  # kept under a hash


async def test_over_https_the_cookie_is_secure_and_host_only(make_app: Any) -> None:
    settings = make_settings(
        {
            "server": {"public_url": "https://bridge.example.com"},
            "session": {"cookie_secure": True},
        },
        env=ENV,
    )
    application = make_app(settings)
    async with application.test_app():
        response = await application.test_client().post("/admin/sign-in", form={"token": ALICE})
        [cookie] = response.headers.getlist("Set-Cookie")
        attributes = [a.strip().lower() for a in cookie.split(";")]
        assert cookie.startswith(f"__Host-{COOKIE_NAME}=")
        assert "secure" in attributes and "path=/" in attributes


@pytest.mark.parametrize("token", ["", "x" * 40, ALICE[:-1], ALICE + "x", "y" * 5000])
async def test_a_wrong_token_signs_nobody_in_and_records_nothing(
    console_app: Quart, token: str
) -> None:
    response = await console_app.test_client().post("/admin/sign-in", form={"token": token})
    assert response.status_code == 401
    assert "That admin token is not valid." in (await response.get_data()).decode()
    assert "Set-Cookie" not in response.headers
    assert await audit_of(console_app) == []
    assert not [k for k in bridge_of(console_app).store.snapshot() if ":console:" in k]


async def test_a_cross_site_sign_in_is_refused(console_app: Quart) -> None:
    response = await console_app.test_client().post(
        "/admin/sign-in", form={"token": ALICE}, headers={"Sec-Fetch-Site": "same-site"}
    )
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "cross_site_request"


async def test_the_bearer_token_is_no_console_session(console_app: Quart) -> None:
    response = await console_app.test_client().get(
        "/admin/console/user?user=visitor", headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert response.status_code == 303


async def test_the_console_session_expires(console_app: Quart, clock: Clock) -> None:
    client = await signed_in(console_app)
    assert (await client.get("/admin/console/user?user=visitor")).status_code == 200
    clock.advance(bridge_of(console_app).settings.admin.console_session_ttl + 1)
    assert (await client.get("/admin/console/user?user=visitor")).status_code == 303


async def test_an_operator_whose_token_is_gone_is_signed_out(
    console_app: Quart, make_app: Any
) -> None:
    client = await signed_in(console_app, BOB)
    assert (await client.get("/admin/console/user?user=visitor")).status_code == 200
    # The same store, after a restart (or reload) with bob's token taken out.
    bridge = bridge_of(console_app)
    without_bob = make_app(make_settings(env={"BRIDGE_ADMIN_TOKENS": f"alice:{ALICE}"}),
                           store=bridge.store)  # fmt: skip
    async with without_bob.test_app():
        again = without_bob.test_client()
        for cookie in client.cookie_jar:  # type: ignore[attr-defined]
            again.set_cookie("localhost", cookie.name, cookie.value, path=cookie.path)
        assert (await again.get("/admin/console/user?user=visitor")).status_code == 303


async def test_sign_out_ends_the_console_session(console_app: Quart) -> None:
    client = await signed_in(console_app)
    csrf = await csrf_of(client)
    cookie = next(c.value for c in client.cookie_jar if c.name == COOKIE_NAME)  # type: ignore[attr-defined]
    response = await client.post("/admin/sign-out", form={"csrf_token": csrf})
    assert response.status_code == 303
    assert f"{COOKIE_NAME}=;" in response.headers["Set-Cookie"]
    replay = console_app.test_client()
    replay.set_cookie("localhost", COOKIE_NAME, cookie, path="/admin")
    assert (await replay.get("/admin/console/user?user=visitor")).status_code == 303
    assert (await audit_of(console_app))[0]["action"] == "console_sign_out"


# --- the guards on every POST -----------------------------------------------------------------

POSTS = [
    ("/admin/console/revoke-session", {"user": "visitor", "session": "0" * 32}),
    ("/admin/console/revoke-user", {"user": "visitor", "block": "60"}),
    ("/admin/console/unblock", {"user": "visitor"}),
    ("/admin/sign-out", {}),
]


@pytest.mark.parametrize(("path", "form"), POSTS)
async def test_posts_need_the_session(console_app: Quart, path: str, form: dict[str, str]) -> None:
    await visit(console_app)
    before = bridge_of(console_app).store.snapshot()  # type: ignore[attr-defined]
    response = await console_app.test_client().post(path, form={**form, "csrf_token": "0" * 64})
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "console_sign_in_required"
    assert bridge_of(console_app).store.snapshot() == before  # type: ignore[attr-defined]


@pytest.mark.parametrize("csrf", [None, "", "0" * 64, "other-session"])
@pytest.mark.parametrize(("path", "form"), POSTS)
async def test_posts_need_the_sessions_form_token(
    console_app: Quart, path: str, form: dict[str, str], csrf: str | None
) -> None:
    await visit(console_app)
    client = await signed_in(console_app)
    if csrf == "other-session":
        csrf = await csrf_of(await signed_in(console_app, BOB))
    before = bridge_of(console_app).store.snapshot()  # type: ignore[attr-defined]
    fields = {**form, **({"csrf_token": csrf} if csrf is not None else {})}
    response = await client.post(path, form=fields)
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "invalid_csrf_token"
    assert bridge_of(console_app).store.snapshot() == before  # type: ignore[attr-defined]


@pytest.mark.parametrize(("path", "form"), POSTS)
async def test_posts_from_another_origin_are_refused(
    console_app: Quart, path: str, form: dict[str, str]
) -> None:
    client = await signed_in(console_app)
    csrf = await csrf_of(client)
    response = await client.post(
        path, form={**form, "csrf_token": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "cross_site_request"


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/admin/console/revoke-session", {"user": "visitor", "session": "nothex"}),
        ("/admin/console/revoke-session", {"user": "", "session": "0" * 32}),
        ("/admin/console/revoke-user", {"user": "visitor", "block": "-1"}),
        ("/admin/console/revoke-user", {"user": "visitor", "block": "²"}),
        ("/admin/console/revoke-user", {"user": "visitor", "block": str(31 * 86400)}),
        ("/admin/console/unblock", {"user": "u" * 300}),
    ],
)
async def test_bad_input_is_400_and_changes_nothing(
    console_app: Quart, path: str, form: dict[str, str]
) -> None:
    await visit(console_app)
    client = await signed_in(console_app)
    csrf = await csrf_of(client)
    before = bridge_of(console_app).store.snapshot()  # type: ignore[attr-defined]
    response = await client.post(path, form={**form, "csrf_token": csrf})
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "bad_request"
    assert bridge_of(console_app).store.snapshot() == before  # type: ignore[attr-defined]


@pytest.mark.parametrize("query", ["", "user=", "user=visitor&window=year", "user=" + "u" * 300])
async def test_a_bad_user_page_query_is_400(console_app: Quart, query: str) -> None:
    client = await signed_in(console_app)
    response = await client.get(f"/admin/console/user?{query}")
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "bad_request"


# --- the user page and its actions --------------------------------------------------------------


async def test_the_user_page_draws_one_mark_per_event_of_the_window(
    console_app: Quart, clock: Clock
) -> None:
    bridge = bridge_of(console_app)
    await visit(console_app)
    clock.advance(2 * 3600)
    await visit(console_app)
    client = await signed_in(console_app)
    events = await bridge.lifecycle.recent("visitor", 50)
    assert len(events) == 4
    for window, expected in (("hour", 2), ("day", 4), ("week", 4)):
        page = await client.get(f"/admin/console/user?user=visitor&window={window}")
        text = (await page.get_data()).decode()
        assert len(re.findall(r'<g class="mark mark-', text)) == expected, window
        assert f'data-events="{expected}"' in text
    assert 'data-event="session_started"' in text and 'data-event="tokens_issued"' in text
    assert text.count('action="/admin/console/revoke-session"') == 2  # a form per live session


async def test_the_user_page_holds_no_secret(console_app: Quart, fake_state: Any) -> None:
    visitor, handle = await visit(console_app)
    client = await signed_in(console_app)
    text = (await (await client.get("/admin/console/user?user=visitor")).get_data()).decode()
    cookies = [c.value for c in [*visitor.cookie_jar, *client.cookie_jar]]  # type: ignore[attr-defined]
    for secret in [handle, ALICE, *cookies, *fake_state.issued_refresh_tokens]:
        assert secret not in text


async def test_revoking_a_session_cuts_it_off_and_is_audited(console_app: Quart) -> None:
    visitor, handle = await visit(console_app)
    [record] = await bridge_of(console_app).sessions.sessions_of("visitor")
    client = await signed_in(console_app)
    csrf = await csrf_of(client)
    response = await client.post(
        "/admin/console/revoke-session",
        form={"csrf_token": csrf, "user": "visitor", "session": record.id, "window": "hour"},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/console/user?user=visitor&window=hour"
    assert "Set-Cookie" not in response.headers  # the operator's own cookies stay
    refused = await visitor.get("/request_tokens", query_string={"refreshToken": handle})
    assert refused.status_code == 401
    entry = (await audit_of(console_app))[0]
    assert (entry["actor"], entry["via"], entry["action"], entry["outcome"]) == (
        "alice",
        "console",
        "revoke_session",
        "ok",
    )
    assert entry["user"] == "visitor" and entry["session"] == record.id
    ended = (await bridge_of(console_app).lifecycle.recent("visitor", 1))[0]
    assert (ended["reason"], ended["by"], ended["actor"]) == ("admin_revoked", "console", "alice")


async def test_a_session_of_another_user_is_not_ended_from_this_users_page(
    console_app: Quart,
) -> None:
    await visit(console_app, "someone-else")
    [record] = await bridge_of(console_app).sessions.sessions_of("someone-else")
    client = await signed_in(console_app)
    csrf = await csrf_of(client)
    await client.post(
        "/admin/console/revoke-session",
        form={"csrf_token": csrf, "user": "visitor", "session": record.id},
    )
    assert await bridge_of(console_app).sessions.sessions_of("someone-else") == [record]
    assert (await audit_of(console_app))[0]["outcome"] == "not_found"


async def test_revoke_all_blocks_and_the_block_can_be_lifted(console_app: Quart) -> None:
    visitor, _ = await visit(console_app)
    client = await signed_in(console_app, BOB)
    csrf = await csrf_of(client)
    await client.post(
        "/admin/console/revoke-user", form={"csrf_token": csrf, "user": "visitor", "block": "3600"}
    )
    blocked = await visitor.get("/request_tokens")
    assert (await blocked.get_json())["error"] == "session_revoked"
    page = (await (await client.get("/admin/console/user?user=visitor")).get_data()).decode()
    assert "blocked until" in page and "Lift block" in page
    await client.post("/admin/console/unblock", form={"csrf_token": csrf, "user": "visitor"})
    assert (await visitor.get("/request_tokens")).status_code == 200
    actions = [(e["actor"], e["action"]) for e in await audit_of(console_app)]
    assert ("bob", "revoke_user") in actions and ("bob", "unblock_user") in actions


async def test_the_audit_page_names_the_operators(console_app: Quart) -> None:
    client = await signed_in(console_app, BOB)
    await client.get("/admin/console/user?user=visitor")
    text = (await (await client.get("/admin/console/audit?actor=bob")).get_data()).decode()
    assert "<strong>bob</strong>" in text and "show_user" in text and "console_sign_in" in text


async def test_the_console_is_absent_without_admin_tokens_or_when_off(make_app: Any) -> None:
    for settings in (make_settings(), make_settings({"admin": {"console": False}}, env=ENV)):
        application = make_app(settings)
        async with application.test_app():
            client = application.test_client()
            assert (await client.get("/admin/")).status_code == 404
            assert (await client.post("/admin/sign-in", form={"token": ALICE})).status_code == 404


async def test_console_pages_set_the_apps_csp_and_no_store(console_app: Quart) -> None:
    client = await signed_in(console_app)
    response = await client.get("/admin/console/user?user=visitor")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert "<script" not in (await response.get_data()).decode()
