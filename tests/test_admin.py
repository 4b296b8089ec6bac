"""The admin API: bearer auth on every call, what it shows, paging, and revocation."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge.errors import ConfigError
from bridge.sessions.admin import Admin
from bridge.sessions.audit import Operator
from bridge.settings import report as config_report
from bridge.store.memory import MemoryStore
from support.app import Clock, bridge_of, login
from support.config import API_KEY, make_settings
from support.ops import ADMIN_TOKEN, admin_headers

WRONG = "admin-token-for-tests-0123456789abcdefghiJ"  # one character off

CALLS = [
    ("GET", "/admin/users/alice"),
    ("GET", "/admin/sessions"),
    ("GET", "/admin/sessions?user=alice&avatar=default&limit=5"),
    ("DELETE", "/admin/users/alice/sessions"),
    ("DELETE", "/admin/users/alice/block"),
    ("DELETE", "/admin/sessions/" + "0" * 32),
]


@pytest.fixture
async def admin_app(make_app: Any) -> AsyncIterator[Quart]:
    application = make_app(make_settings(env={"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}))
    async with application.test_app():
        yield application


async def visit(app: Quart, user: str = "alice", path: str = "/request_tokens") -> Client:
    """Return a client of ``user`` that fetched tokens once."""
    client = app.test_client()
    login(client, app, user, groups=["customers"], email=f"{user}@example.com")
    response = await client.get(path)
    assert response.status_code == 200, await response.get_data()
    client.handle = (await response.get_json())["tokens"]["refreshToken"]  # type: ignore[attr-defined]
    return client


async def call(app: Quart, method: str, path: str, **kwargs: Any) -> Any:
    kwargs.setdefault("headers", admin_headers())
    return await app.test_client().open(path, method=method, **kwargs)


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), CALLS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {WRONG}"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer "},
        {"Authorization": ADMIN_TOKEN},
    ],
    ids=["missing", "wrong", "other-scheme", "empty", "no-scheme"],
)
async def test_every_call_needs_the_token(
    admin_app: Quart, method: str, path: str, headers: dict[str, str]
) -> None:
    await visit(admin_app)
    before = bridge_of(admin_app).store.snapshot()  # type: ignore[attr-defined]
    response = await call(admin_app, method, path, headers=headers)
    assert response.status_code == 401
    body = await response.get_json()
    # The same answer whatever was wrong: no hint of which.
    assert body == {"error": "unauthorized", "message": "A valid bearer token is required."}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert bridge_of(admin_app).store.snapshot() == before  # type: ignore[attr-defined]


@pytest.mark.parametrize(("method", "path"), CALLS)
async def test_every_call_works_with_the_token(admin_app: Quart, method: str, path: str) -> None:
    await visit(admin_app)
    response = await call(admin_app, method, path)
    expected = 404 if path.startswith("/admin/sessions/") else 200
    assert response.status_code == expected
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"


async def test_admin_api_is_absent_without_a_token(app: Quart) -> None:
    for method, path in CALLS:
        response = await call(app, method, path)
        assert response.status_code in (404, 405)
        assert (await response.get_json())["error"] in ("not_found", "method_not_allowed")


def test_short_admin_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="BRIDGE_ADMIN_TOKEN"):
        make_settings(env={"BRIDGE_ADMIN_TOKEN": "too-short"})


def test_admin_token_is_masked_in_the_effective_config() -> None:
    settings = make_settings(env={"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN})
    assert config_report.masked(settings)["admin_tokens"] == ["admin"]
    assert ADMIN_TOKEN not in repr(settings)


async def test_cross_site_browser_requests_are_refused(admin_app: Quart) -> None:
    headers = {**admin_headers(), "Sec-Fetch-Site": "cross-site"}
    response = await call(admin_app, "DELETE", "/admin/users/alice/sessions", headers=headers)
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "cross_site_request"


async def test_admin_cookie_alone_authenticates_nothing(admin_app: Quart) -> None:
    client = await visit(admin_app)  # a signed-in visitor, with every cookie the bridge sets
    response = await client.get("/admin/users/alice")
    assert response.status_code == 401


# --- what it shows ----------------------------------------------------------------------------


async def test_user_shows_sessions_and_events_without_secrets(
    admin_app: Quart, fake_state: Any
) -> None:
    client = await visit(admin_app)
    response = await call(admin_app, "GET", "/admin/users/alice")
    body = await response.get_json()
    assert body["user"] == "alice" and body["blocked_until"] is None
    [session] = body["sessions"]
    record = (await bridge_of(admin_app).sessions.sessions_of("alice"))[0]
    assert session["id"] == record.id
    assert session["avatars"] == ["default"] and session["tabs"] == 1
    assert session["has_tokens"] is True
    assert [e["event"] for e in body["events"]] == ["tokens_issued", "session_started"]
    text = (await response.get_data()).decode()
    secrets = [
        client.handle,  # type: ignore[attr-defined]
        *fake_state.issued_access_tokens,
        *fake_state.issued_refresh_tokens,
        API_KEY,
        *[c.value for c in client.cookie_jar],  # type: ignore[attr-defined]
        base64.b64encode(record.sealed or b"").decode(),
        *[chain.current for chain in record.chains],
    ]
    for secret in secrets:
        assert secret and secret not in text


async def test_unknown_user_is_an_empty_answer(admin_app: Quart) -> None:
    body = await (await call(admin_app, "GET", "/admin/users/nobody")).get_json()
    assert body == {"user": "nobody", "sessions": [], "events": [], "blocked_until": None}


async def test_sessions_are_listed_in_pages(admin_app: Quart) -> None:
    for n in range(5):
        await visit(admin_app, f"user{n}")
    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = await (await call(admin_app, "GET", f"/admin/sessions?{query}")).get_json()
        assert len(body["sessions"]) <= 2
        seen += [s["id"] for s in body["sessions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and seen == sorted(seen)


async def test_sessions_filter_by_user_and_avatar(admin_app: Quart) -> None:
    await visit(admin_app, "alice")
    await visit(admin_app, "bob", "/request_tokens/premium")
    by_user = await (await call(admin_app, "GET", "/admin/sessions?user=bob")).get_json()
    assert [s["user"] for s in by_user["sessions"]] == ["bob"]
    by_avatar = await (await call(admin_app, "GET", "/admin/sessions?avatar=premium")).get_json()
    assert [s["user"] for s in by_avatar["sessions"]] == ["bob"]
    both = await (
        await call(admin_app, "GET", "/admin/sessions?user=alice&avatar=premium")
    ).get_json()
    assert both["sessions"] == []


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=501", "limit=x", "cursor=nothex", "avatar=nope", "user=" + "u" * 300],
)
async def test_bad_list_queries_are_400(admin_app: Quart, query: str) -> None:
    response = await call(admin_app, "GET", f"/admin/sessions?{query}")
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "bad_request"


async def test_bad_session_id_is_400(admin_app: Quart) -> None:
    response = await call(admin_app, "DELETE", "/admin/sessions/not-a-session")
    assert response.status_code == 400


# --- revocation -----------------------------------------------------------------------------


async def test_revoking_a_user_cuts_off_their_next_token_request(admin_app: Quart) -> None:
    tab = await visit(admin_app)
    other = await visit(admin_app, "bob")
    response = await call(admin_app, "DELETE", "/admin/users/alice/sessions")
    body = await response.get_json()
    assert body["ended"] == 1 and body["blocked_until"] is not None
    assert "Set-Cookie" not in response.headers  # the operator's own cookies are not touched
    refresh = await tab.get(
        "/request_tokens",
        query_string={"refreshToken": tab.handle},  # type: ignore[attr-defined]
    )
    assert refresh.status_code == 401
    fresh = await tab.get("/request_tokens")  # the site login is still valid: blocked anyway
    assert fresh.status_code == 401
    assert (await fresh.get_json())["error"] == "session_revoked"
    assert (await other.get("/request_tokens")).status_code == 200  # others are unaffected
    assert await bridge_of(admin_app).sessions.sessions_of("alice") == []


async def test_block_ends_and_can_be_lifted(admin_app: Quart, clock: Clock) -> None:
    tab = await visit(admin_app)
    await call(admin_app, "DELETE", "/admin/users/alice/sessions?block=60")
    assert (await tab.get("/request_tokens")).status_code == 401
    clock.advance(61)
    assert (await tab.get("/request_tokens")).status_code == 200
    await call(admin_app, "DELETE", "/admin/users/alice/sessions?block=600")
    assert (await tab.get("/request_tokens")).status_code == 401
    lifted = await call(admin_app, "DELETE", "/admin/users/alice/block")
    assert (await lifted.get_json())["blocked_until"] is None
    assert (await tab.get("/request_tokens")).status_code == 200


async def test_revoke_without_block_lets_a_fresh_session_start(admin_app: Quart) -> None:
    tab = await visit(admin_app)
    body = await (await call(admin_app, "DELETE", "/admin/users/alice/sessions?block=0")).get_json()
    assert body["ended"] == 1 and body["blocked_until"] is None
    refresh = await tab.get(
        "/request_tokens",
        query_string={"refreshToken": tab.handle},  # type: ignore[attr-defined]
    )
    assert refresh.status_code == 401  # the old handle died with the session
    assert (await tab.get("/request_tokens")).status_code == 200


async def test_revoking_one_session_leaves_the_others(admin_app: Quart) -> None:
    phone, laptop = await visit(admin_app), await visit(admin_app)
    ids = [r.id for r in await bridge_of(admin_app).sessions.sessions_of("alice")]
    assert len(ids) == 2
    response = await call(admin_app, "DELETE", f"/admin/sessions/{ids[0]}")
    assert await response.get_json() == {"id": ids[0], "ended": True}
    left = await bridge_of(admin_app).sessions.sessions_of("alice")
    assert [r.id for r in left] == [ids[1]]
    again = await call(admin_app, "DELETE", f"/admin/sessions/{ids[0]}")
    assert again.status_code == 404
    assert (await again.get_json())["error"] == "not_found"
    del phone, laptop


async def test_bad_block_is_400_and_revokes_nothing(admin_app: Quart) -> None:
    await visit(admin_app)
    response = await call(admin_app, "DELETE", "/admin/users/alice/sessions?block=-1")
    assert response.status_code == 400
    assert len(await bridge_of(admin_app).sessions.sessions_of("alice")) == 1


@pytest.mark.integration
def test_live_operator_revokes_a_visitor(live_fake: Any, live_bridge_factory: Any) -> None:
    import httpx

    from support.app import site_cookie

    settings = make_settings(
        {"sentifyd": {"backend": live_fake.url}}, env={"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}
    )
    server, application = live_bridge_factory(settings)
    cookie = site_cookie(application, "alice")
    with (
        httpx.Client(base_url=server.url, cookies={"session": cookie}) as visitor,
        httpx.Client(base_url=server.url, headers=admin_headers()) as operator,
    ):
        handle = visitor.get("/request_tokens").json()["tokens"]["refreshToken"]
        shown = operator.get("/admin/users/alice").json()
        assert len(shown["sessions"]) == 1
        assert handle not in operator.get("/admin/users/alice").text
        assert operator.delete("/admin/users/alice/sessions").json()["ended"] == 1
        refused = visitor.get("/request_tokens", params={"refreshToken": handle})
        assert refused.status_code == 401
        assert visitor.get("/request_tokens").json()["error"] == "session_revoked"
        assert httpx.get(f"{server.url}/admin/users/alice").status_code == 401


class _RevokeMidCreate(MemoryStore):
    """A memory store on which an admin revoke lands while a new session is being stored."""

    revoke: Any = None

    async def put_record(self, key: str, value: dict[str, Any], ttl: float, **kw: Any) -> bool:
        written = await super().put_record(key, value, ttl, **kw)
        if kw.get("create") and self.revoke is not None:
            revoke, self.revoke = self.revoke, None
            await revoke()
        return written


async def test_a_revoke_landing_while_a_session_starts_ends_it_too(make_app: Any) -> None:
    store = _RevokeMidCreate()
    application = make_app(make_settings(env={"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}), store=store)
    async with application.test_app():
        bridge = bridge_of(application)
        admin = Admin(bridge, Operator("test", "cli"))

        async def revoke() -> None:  # the session is stored, not yet in the user's index
            assert (await admin.revoke_user("alice", block=3600))["ended"] == 0

        store.revoke = revoke
        client = application.test_client()
        login(client, application)
        response = await client.get("/request_tokens")
        assert response.status_code == 401
        assert (await response.get_json())["error"] == "session_revoked"
        assert await bridge.sessions.sessions_of("alice") == []
        assert not [k for k in store.snapshot() if ":session:" in k]
