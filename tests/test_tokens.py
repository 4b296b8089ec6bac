"""The token endpoint: the component's contract, handle chains, and every error status."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from support.app import Clock, bridge_of, login, site_cookie
from support.config import API_KEY, AVATAR_ID, make_settings

COOKIE = "sentifyd_bridge"


async def tokens(client: Client, path: str = "/request_tokens", **kwargs: Any) -> Any:
    return await client.get(path, **kwargs)


async def first(client: Client, app: Quart, path: str = "/request_tokens") -> dict[str, Any]:
    login(client, app, email="alice@example.com", groups=["customers"])
    response = await tokens(client, path)
    assert response.status_code == 200, await response.get_data()
    body: dict[str, Any] = await response.get_json()
    return body


def stored_records(app: Quart) -> dict[str, Any]:
    return bridge_of(app).store.snapshot()  # type: ignore[attr-defined, no-any-return]


# --- the contract ---------------------------------------------------------------------------


async def test_answer_has_the_component_contract(client: Client, app: Quart) -> None:
    body = await first(client, app)
    assert set(body) == {"tokens", "avatarParameters"}
    assert set(body["tokens"]) == {"accessToken", "refreshToken", "tokenType", "expiresIn"}
    assert body["tokens"]["tokenType"] == "Bearer"
    assert 0 < body["tokens"]["expiresIn"] <= 60
    assert isinstance(body["avatarParameters"], dict) and body["avatarParameters"]


async def test_refresh_token_is_an_opaque_handle_not_sentifyds(
    client: Client, app: Quart, fake_state: Any
) -> None:
    body = await first(client, app)
    handle = body["tokens"]["refreshToken"]
    assert len(handle) == 43  # 256 random bits, base64url
    assert handle not in fake_state.issued_refresh_tokens
    assert body["tokens"]["accessToken"] in fake_state.issued_access_tokens


async def test_answers_are_never_cached(client: Client, app: Quart) -> None:
    login(client, app)
    ok = await tokens(client)
    refused = await tokens(client, "/request_tokens/nope")
    wrong_method = await client.delete("/request_tokens")
    for response in (ok, refused, wrong_method):
        assert response.headers["Cache-Control"] == "no-store"


async def test_session_cookie_is_httponly_and_lax(client: Client, app: Quart) -> None:
    login(client, app)
    response = await tokens(client)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie


async def test_secure_cookie_uses_host_prefix(make_app: Any) -> None:
    application = make_app(make_settings({"session": {"cookie_secure": True}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        response = await client.get("/request_tokens", scheme="https")
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("__Host-sentifyd_bridge=") and "Secure" in cookie


async def test_post_works_like_get(client: Client, app: Quart) -> None:
    login(client, app)
    issued = await client.post("/request_tokens")
    assert issued.status_code == 200
    handle = (await issued.get_json())["tokens"]["refreshToken"]
    refreshed = await client.post("/request_tokens", json={"refreshToken": handle})
    assert refreshed.status_code == 200
    assert (await refreshed.get_json())["tokens"]["refreshToken"] != handle


async def test_tokens_are_reused_within_their_lifetime(
    client: Client, app: Quart, fake_state: Any
) -> None:
    one = await first(client, app)
    two = await (await tokens(client)).get_json()
    assert one["tokens"]["accessToken"] == two["tokens"]["accessToken"]
    assert fake_state.login_calls == 1


async def test_tokens_are_fetched_again_near_expiry(
    client: Client, app: Quart, fake_state: Any, clock: Clock
) -> None:
    await first(client, app)
    clock.advance(50)  # 60 s tokens; within the margin of a quarter of their life
    await tokens(client)
    assert fake_state.login_calls + fake_state.refresh_calls == 2


async def test_refresh_late_in_the_tokens_life_gets_new_tokens(
    client: Client, app: Quart, fake_state: Any, clock: Clock
) -> None:
    body = await first(client, app)
    clock.advance(40)  # 20 s left of 60: still served to a new tab, too old for a refresh
    again = await (await tokens(client)).get_json()
    assert again["tokens"]["accessToken"] == body["tokens"]["accessToken"]
    handle = again["tokens"]["refreshToken"]
    refreshed = await (await tokens(client, query_string={"refreshToken": handle})).get_json()
    assert refreshed["tokens"]["accessToken"] != body["tokens"]["accessToken"]
    assert refreshed["tokens"]["expiresIn"] > 50
    assert fake_state.login_calls + fake_state.refresh_calls == 2


async def test_early_refresh_shares_the_cached_tokens(
    client: Client, app: Quart, fake_state: Any, clock: Clock
) -> None:
    body = await first(client, app)
    clock.advance(5)
    handle = body["tokens"]["refreshToken"]
    refreshed = await (await tokens(client, query_string={"refreshToken": handle})).get_json()
    assert refreshed["tokens"]["accessToken"] == body["tokens"]["accessToken"]
    assert fake_state.login_calls == 1


async def test_named_avatar_uses_its_own_key(client: Client, app: Quart, fake_state: Any) -> None:
    body = await first(client, app, "/request_tokens/premium")
    assert body["tokens"]["accessToken"] in fake_state.issued_access_tokens
    import base64
    import json

    payload = body["tokens"]["accessToken"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == "avtr_premium"


# --- handle chains --------------------------------------------------------------------------


async def test_each_first_request_starts_its_own_chain(client: Client, app: Quart) -> None:
    tab1 = (await first(client, app))["tokens"]["refreshToken"]
    tab2 = (await (await tokens(client)).get_json())["tokens"]["refreshToken"]
    assert tab1 != tab2
    for handle in (tab1, tab2):
        response = await tokens(client, query_string={"refreshToken": handle})
        assert response.status_code == 200


async def test_refresh_rotates_the_handle(client: Client, app: Quart) -> None:
    handle = (await first(client, app))["tokens"]["refreshToken"]
    response = await tokens(client, query_string={"refreshToken": handle})
    new = (await response.get_json())["tokens"]["refreshToken"]
    assert new != handle
    again = await tokens(client, query_string={"refreshToken": new})
    assert again.status_code == 200


async def test_duplicate_refresh_within_grace_gets_the_same_answer(
    client: Client, app: Quart, clock: Clock
) -> None:
    handle = (await first(client, app))["tokens"]["refreshToken"]
    one = await (await tokens(client, query_string={"refreshToken": handle})).get_json()
    clock.advance(5)
    two = await (await tokens(client, query_string={"refreshToken": handle})).get_json()
    assert two["tokens"]["refreshToken"] == one["tokens"]["refreshToken"]
    assert two["tokens"]["accessToken"] == one["tokens"]["accessToken"]


async def test_replayed_handle_after_grace_ends_session(
    client: Client, app: Quart, clock: Clock
) -> None:
    handle = (await first(client, app))["tokens"]["refreshToken"]
    new = (await (await tokens(client, query_string={"refreshToken": handle})).get_json())[
        "tokens"
    ]["refreshToken"]
    clock.advance(11)
    replay = await tokens(client, query_string={"refreshToken": handle})
    assert replay.status_code == 401
    assert (await replay.get_json())["error"] == "invalid_refresh_token"
    assert f"{COOKIE}=;" in replay.headers["Set-Cookie"]  # the session cookie is cleared
    events = await bridge_of(app).lifecycle.recent("alice")
    assert [e["event"] for e in events[:2]] == ["session_ended", "refresh_handle_reused"]
    assert events[0]["reason"] == "handle_reuse"
    # The legitimate holder's current handle died with the session.
    assert (await tokens(client, query_string={"refreshToken": new})).status_code == 401
    assert await bridge_of(app).sessions.sessions_of("alice") == []


async def test_a_long_chain_keeps_a_small_record_and_still_catches_old_handles(
    client: Client, app: Quart, clock: Clock
) -> None:
    # Each refresh writes the whole record back: the retired handles it keeps are bounded and
    # compact, and the oldest one still kept is a replay that ends the session.
    from bridge.broker import MAX_RETIRED

    handles = [(await first(client, app))["tokens"]["refreshToken"]]
    for _ in range(MAX_RETIRED + 10):
        clock.advance(20)
        body = await (await tokens(client, query_string={"refreshToken": handles[-1]})).get_json()
        handles.append(body["tokens"]["refreshToken"])
    [record] = await bridge_of(app).sessions.sessions_of("alice")
    [chain] = record.chains
    assert len(chain.spent) == MAX_RETIRED * 8 and chain.retired == []
    [raw] = [v for k, v in stored_records(app).items() if ":session:" in k]
    assert len(raw) < 2000, len(raw)  # 32 hex digests alone were 2.1 KB (3.4 KB in all)
    clock.advance(20)
    replay = await tokens(client, query_string={"refreshToken": handles[-1 - MAX_RETIRED]})
    assert replay.status_code == 401
    events = await bridge_of(app).lifecycle.recent("alice")
    assert events[0]["reason"] == "handle_reuse"


async def test_after_a_long_chain_the_handle_just_rotated_is_still_a_replay(
    client: Client, app: Quart, clock: Clock
) -> None:
    # The retired handles kept are the newest: after more rotations than are kept, the one
    # just rotated is the likeliest to be replayed by whoever copied it.
    from bridge.broker import MAX_RETIRED

    handles = [(await first(client, app))["tokens"]["refreshToken"]]
    for _ in range(MAX_RETIRED + 10):
        clock.advance(20)
        body = await (await tokens(client, query_string={"refreshToken": handles[-1]})).get_json()
        handles.append(body["tokens"]["refreshToken"])
    clock.advance(11)  # past the grace window
    replay = await tokens(client, query_string={"refreshToken": handles[-2]})
    assert replay.status_code == 401
    events = await bridge_of(app).lifecycle.recent("alice")
    assert [e["event"] for e in events[:2]] == ["session_ended", "refresh_handle_reused"]
    assert await bridge_of(app).sessions.sessions_of("alice") == []


async def test_handles_retired_by_the_previous_version_are_still_replays(
    client: Client, app: Quart, clock: Clock
) -> None:
    # Records written before ``spent`` list retired handles as hex digests in ``retired``.
    from bridge.sessions.manager import SessionContext
    from bridge.sessions.sealing import digest

    handle = (await first(client, app))["tokens"]["refreshToken"]
    sessions = bridge_of(app).sessions
    [record] = await sessions.sessions_of("alice")
    old = secrets.token_urlsafe(32)
    token = next(c.value for c in client.cookie_jar if c.name == COOKIE)  # type: ignore[attr-defined]
    ctx = SessionContext(record, token, record.identity(), raw=b"")
    loaded = await sessions.load_raw(token)
    assert loaded is not None
    ctx.record, ctx.raw = loaded

    def legacy(r: Any) -> None:
        r.chains[0].retired = [digest(old)]

    await sessions.update(ctx, legacy)
    fresh = await tokens(client, query_string={"refreshToken": handle})
    assert fresh.status_code == 200  # the current handle still rotates, and the list moves on
    [record] = await sessions.sessions_of("alice")
    assert record.chains[0].retired == [] and len(record.chains[0].spent) == 16
    clock.advance(20)
    assert (await tokens(client, query_string={"refreshToken": old})).status_code == 401
    assert (await bridge_of(app).lifecycle.recent("alice"))[0]["reason"] == "handle_reuse"


async def test_handle_of_another_session_is_refused(make_app: Any) -> None:
    application = make_app()
    async with application.test_app():
        alice, mallory = application.test_client(), application.test_client()
        login(alice, application, "alice")
        login(mallory, application, "mallory")
        handle = (await (await alice.get("/request_tokens")).get_json())["tokens"]["refreshToken"]
        await mallory.get("/request_tokens")
        before = stored_records(application)
        stolen = await mallory.get("/request_tokens", query_string={"refreshToken": handle})
        assert stolen.status_code == 401
        assert (await stolen.get_json())["error"] == "invalid_refresh_token"
        assert stored_records(application) == before
        # ...and the owner is unaffected.
        assert (
            await alice.get("/request_tokens", query_string={"refreshToken": handle})
        ).status_code == 200


async def test_stolen_handle_without_the_session_cookie_is_worthless(make_app: Any) -> None:
    application = make_app()
    async with application.test_app():
        owner, thief = application.test_client(), application.test_client()
        login(owner, application)
        handle = (await (await owner.get("/request_tokens")).get_json())["tokens"]["refreshToken"]
        response = await thief.get("/request_tokens", query_string={"refreshToken": handle})
        assert response.status_code == 401
        # Even with the victim's site cookie but not the bridge cookie, no session is started.
        login(thief, application)
        before = stored_records(application)
        response = await thief.get("/request_tokens", query_string={"refreshToken": handle})
        assert response.status_code == 401
        assert stored_records(application) == before


async def test_handle_is_bound_to_its_avatar(client: Client, app: Quart) -> None:
    handle = (await first(client, app))["tokens"]["refreshToken"]
    response = await tokens(
        client, "/request_tokens/premium", query_string={"refreshToken": handle}
    )
    assert response.status_code == 401


async def test_a_new_tab_beyond_the_cap_is_served_and_every_open_tab_still_refreshes(
    make_app: Any, fake_state: Any
) -> None:
    application = make_app(make_settings({"session": {"max_chains": 3}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        handles = []
        for _ in range(3):
            handles.append(
                (await (await client.get("/request_tokens")).get_json())["tokens"]["refreshToken"]
            )
        fourth = await client.get("/request_tokens")
        assert fourth.status_code == 200  # a page view is never refused for want of room
        for handle in handles:  # every open tab still refreshes (an evicted one as a new tab)
            again = await client.get("/request_tokens", query_string={"refreshToken": handle})
            assert again.status_code == 200
        assert fake_state.login_calls == 1


async def test_an_idle_chain_evicted_for_a_new_tab_recovers_on_its_next_refresh(
    make_app: Any, clock: Clock
) -> None:
    application = make_app(make_settings({"session": {"max_chains": 3}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        handles = []
        for _ in range(3):
            handles.append(
                (await (await client.get("/request_tokens")).get_json())["tokens"]["refreshToken"]
            )
        clock.advance(100)  # the 60 s tokens expired; the third tab refreshes, the others left
        kept = await client.get("/request_tokens", query_string={"refreshToken": handles[2]})
        assert kept.status_code == 200
        clock.advance(100)
        assert (await client.get("/request_tokens")).status_code == 200  # evicts the first
        oldest = await client.get("/request_tokens", query_string={"refreshToken": handles[0]})
        assert oldest.status_code == 200  # it was only idle: a new chain, the same session
        events = [e["event"] for e in await bridge_of(application).lifecycle.recent("alice")]
        assert "refresh_handle_reused" not in events and "session_ended" not in events
        live = (await kept.get_json())["tokens"]["refreshToken"]
        newest = await client.get("/request_tokens", query_string={"refreshToken": live})
        assert newest.status_code == 200


# --- identity and session -------------------------------------------------------------------


async def test_no_login_is_401_with_login_url(client: Client) -> None:
    response = await tokens(client)
    assert response.status_code == 401
    body = await response.get_json()
    assert body["error"] == "login_required"
    assert body["login_url"] == "https://shop.example.com/login?next=/"


async def test_login_url_next_names_the_avatar_page(client: Client) -> None:
    body = await (await tokens(client, "/request_tokens/premium")).get_json()
    assert body["login_url"].endswith("next=/avatars/premium")


async def test_site_logout_ends_the_bridge_session(client: Client, app: Quart) -> None:
    await first(client, app)
    client.delete_cookie("localhost", "session")
    response = await tokens(client)
    assert response.status_code == 401
    events = await bridge_of(app).lifecycle.recent("alice")
    assert events[0]["event"] == "session_ended" and events[0]["reason"] == "site_logout"


async def test_other_user_on_the_site_gets_a_fresh_session(client: Client, app: Quart) -> None:
    one = await first(client, app)
    login(client, app, "bob")
    response = await tokens(client)
    assert response.status_code == 200
    assert f"{COOKIE}=" in response.headers["Set-Cookie"]  # a new id, never the old one
    assert (await bridge_of(app).sessions.sessions_of("alice")) == []
    old_handle = one["tokens"]["refreshToken"]
    assert (await tokens(client, query_string={"refreshToken": old_handle})).status_code == 401


async def test_idle_timeout_ends_the_session(client: Client, app: Quart, clock: Clock) -> None:
    handle = (await first(client, app))["tokens"]["refreshToken"]
    clock.advance(1801)
    response = await tokens(client, query_string={"refreshToken": handle})
    assert response.status_code == 401
    events = await bridge_of(app).lifecycle.recent("alice")
    assert any(e["event"] == "session_ended" and e["reason"] == "idle_timeout" for e in events)


async def test_absolute_timeout_ends_the_session(client: Client, app: Quart, clock: Clock) -> None:
    await first(client, app)
    for _ in range(25):  # active every half hour, for 12.5 hours
        clock.advance(1790)
        login(client, app)  # the site cookie is re-issued by an active site
        await tokens(client)
    events = await bridge_of(app).lifecycle.recent("alice", 100)
    assert any(e["event"] == "session_ended" and e["reason"] == "absolute_timeout" for e in events)


async def test_forged_site_cookie_is_401(client: Client, app: Quart) -> None:
    from itsdangerous import URLSafeTimedSerializer

    forged = URLSafeTimedSerializer("not-the-site-key", salt="cookie-session").dumps(
        {"user_id": "alice"}
    )
    client.set_cookie("localhost", "session", str(forged))
    assert (await tokens(client)).status_code == 401


async def test_forbidden_user_is_403(client: Client, app: Quart) -> None:
    login(client, app, "bob", groups=[])
    before = stored_records(app)
    response = await tokens(client, "/request_tokens/premium")
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "forbidden"
    assert "Set-Cookie" not in response.headers
    after = stored_records(app)
    assert {k for k in after if ":session:" in k} == {k for k in before if ":session:" in k}


# --- request checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:8001"},
    ],
)
async def test_cross_site_requests_are_refused(
    client: Client, app: Quart, headers: dict[str, str]
) -> None:
    login(client, app)
    response = await tokens(client, headers=headers)
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "cross_site_request"


async def test_same_origin_and_allowed_origins_pass(make_app: Any) -> None:
    application = make_app(
        make_settings({"server": {"allowed_origins": ["https://www.example.com"]}})
    )
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        same = await client.get(
            "/request_tokens",
            headers={"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"},
        )
        assert same.status_code == 200
        other = await client.get("/request_tokens", headers={"Origin": "https://www.example.com"})
        assert other.status_code == 200
        assert other.headers["Access-Control-Allow-Origin"] == "https://www.example.com"
        assert other.headers["Access-Control-Allow-Credentials"] == "true"


async def test_unknown_avatar_is_404(client: Client, app: Quart) -> None:
    login(client, app)
    response = await tokens(client, "/request_tokens/ghost")
    assert response.status_code == 404
    assert (await response.get_json())["error"] == "unknown_avatar"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405(client: Client, method: str) -> None:
    response = await client.open("/request_tokens", method=method)
    assert response.status_code == 405
    assert (await response.get_json())["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    "handle", ["x", "A" * 43 + "!", "../../etc/passwd", "\u00e9" * 43, "A" * 43]
)
async def test_garbage_handles_are_401_and_change_nothing(
    client: Client, app: Quart, handle: str
) -> None:
    await first(client, app)
    before = stored_records(app)
    response = await tokens(client, query_string={"refreshToken": handle})
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "invalid_refresh_token"
    assert stored_records(app) == before


async def test_oversized_handle_is_400(client: Client, app: Quart) -> None:
    await first(client, app)
    response = await tokens(client, query_string={"refreshToken": "A" * 300})
    assert response.status_code == 400


async def test_huge_query_string_is_refused(client: Client, app: Quart) -> None:
    await first(client, app)
    before = stored_records(app)
    response = await tokens(client, query_string={"pad": "x" * 5000})
    assert response.status_code == 413
    assert (await response.get_json())["error"] == "request_too_large"
    assert stored_records(app) == before


async def test_oversized_site_cookie_is_401(client: Client, app: Quart) -> None:
    good = site_cookie(app, "alice", pad=secrets.token_hex(3000))  # incompressible
    assert len(good) > 4096
    with pytest.warns(UserWarning, match="cookie is too large"):  # werkzeug's own warning
        client.set_cookie("localhost", "session", good)
    assert (await tokens(client)).status_code == 401


# --- upstream failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fail", "status", "code"),
    [
        ("status:500", 502, "upstream_unavailable"),
        ("status:503", 502, "upstream_unavailable"),
        ("status:401", 502, "upstream_rejected"),
        ("status:429", 502, "upstream_rejected"),
        ("non_json", 502, "upstream_unavailable"),
        ("missing_fields", 502, "upstream_unavailable"),
        ("huge", 502, "upstream_unavailable"),
    ],
)
async def test_upstream_failures_are_clear_json_errors(
    client: Client, app: Quart, fake_state: Any, fail: str, status: int, code: str
) -> None:
    login(client, app)
    fake_state.fail = fail
    response = await tokens(client)
    assert response.status_code == status
    body = await response.get_json()
    assert body["error"] == code
    text = (await response.get_data()).decode()
    assert API_KEY not in text and "Traceback" not in text
    if code == "upstream_rejected":
        assert body["upstream_status"] == int(fail.split(":")[1])
    fake_state.fail = None
    assert (await tokens(client)).status_code == 200  # heals with the upstream


async def test_unreachable_upstream_is_502(make_app: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    application = make_app(sentifyd_transport=httpx.MockTransport(refuse))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        response = await client.get("/request_tokens")
        assert response.status_code == 502
        assert (await response.get_json())["error"] == "upstream_unavailable"


async def test_upstream_timeout_is_504(make_app: Any) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    application = make_app(sentifyd_transport=httpx.MockTransport(slow))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        response = await client.get("/request_tokens")
        assert response.status_code == 504
        assert (await response.get_json())["error"] == "upstream_timeout"


async def test_login_body_of_plugin_path_carries_avatar_id(make_app: Any) -> None:
    seen: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> httpx.Response:
        import json

        seen.append({"path": request.url.path, "body": json.loads(request.content)})
        return httpx.Response(
            200,
            json={
                "data": {
                    "access_token": "a.b.c",
                    "refresh_token": "r",
                    "avatar_params": {},
                    "expires_in": 60,
                }
            },
        )

    for path, expect_id in (("/api/v1/chatbot/login", True), ("/api/login", False)):
        seen.clear()
        application = make_app(
            make_settings({"sentifyd": {"login_path": path}}),
            sentifyd_transport=httpx.MockTransport(record),
        )
        async with application.test_app():
            client = application.test_client()
            login(client, application)
            assert (await client.get("/request_tokens")).status_code == 200
        assert seen[0]["path"] == path
        assert seen[0]["body"]["avatar_api_key"] == API_KEY
        assert ("avatar_id" in seen[0]["body"]) is expect_id
        if expect_id:
            assert seen[0]["body"]["avatar_id"] == AVATAR_ID


async def test_upstream_refresh_path_is_tried_before_login(
    make_app: Any, fake_state: Any, clock: Clock
) -> None:
    application = make_app(make_settings({"sentifyd": {"refresh_path": "/api/v1/chatbot/refresh"}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        handle = (await (await client.get("/request_tokens")).get_json())["tokens"]["refreshToken"]
        clock.advance(55)
        response = await client.get("/request_tokens", query_string={"refreshToken": handle})
        assert response.status_code == 200
    assert fake_state.login_calls == 1 and fake_state.refresh_calls == 1
