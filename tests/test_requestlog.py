"""Structured logs: one line per request and per lifecycle event, request ids, no secrets."""

from __future__ import annotations

import re
from typing import Any

import pytest
from quart import Quart

from bridge.web.requestlog import REQUEST_ID_RE
from support.app import Clock, bridge_of, login, site_cookie
from support.config import API_KEY, BRIDGE_KEY, PREMIUM_API_KEY, SITE_KEY, make_settings
from support.live import LiveServer
from support.ops import ADMIN_TOKEN, METRICS_TOKEN, OPS_ENV, admin_headers, captured_log

PROXY = "10.0.0.9"
# A request whose direct peer is the configured proxy (the proxy middleware then trusts it).
TRUSTED = {"client": (PROXY, 41000)}


@pytest.fixture
async def trusted_app(make_app: Any) -> Any:
    application = make_app(make_settings({"server": {"trusted_proxies": [PROXY]}}))
    async with application.test_app():
        yield application


async def test_one_line_per_request_without_the_query(app: Quart) -> None:
    client = app.test_client()
    login(client, app)
    with captured_log() as log:
        await client.get("/request_tokens", query_string={"refreshToken": "x" * 43})
    [line] = log.of("bridge.request")
    assert line["msg"] == "request" and line["method"] == "GET"
    assert line["path"] == "/request_tokens" and line["status"] == 401
    assert line["outcome"] == "invalid_refresh_token" and line["avatar"] == "default"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert "x" * 43 not in log.text and "refreshToken" not in log.text


async def test_request_log_names_the_hashed_session(app: Quart) -> None:
    client = app.test_client()
    login(client, app)
    with captured_log() as log:
        await client.get("/request_tokens")  # starts the session
        await client.get("/request_tokens")  # comes back with its cookie
    record = (await bridge_of(app).sessions.sessions_of("alice"))[0]
    assert [line["session"] for line in log.of("bridge.request")] == [record.id, record.id]


async def test_request_id_is_generated_and_returned(app: Quart) -> None:
    client = app.test_client()
    with captured_log() as log:
        one = await client.get("/healthz")
        two = await client.get("/healthz", headers={"X-Request-ID": "planted-by-a-visitor"})
    ids = [one.headers["X-Request-ID"], two.headers["X-Request-ID"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and ids[0] != ids[1]
    assert [line["request_id"] for line in log.of("bridge.request")] == ids
    assert "planted-by-a-visitor" not in log.text


async def test_trusted_proxy_request_id_is_kept(trusted_app: Quart) -> None:
    with captured_log() as log:
        response = await trusted_app.test_client().get(
            "/healthz", headers={"X-Request-ID": "req-7f3a.b2:9"}, scope_base=TRUSTED
        )
    assert response.headers["X-Request-ID"] == "req-7f3a.b2:9"
    assert log.of("bridge.request")[0]["request_id"] == "req-7f3a.b2:9"


@pytest.mark.parametrize(
    "value",
    ["", "a" * 129, "two words", "tab\there", "semi;colon", "<script>", "-leading-dash", "é"],
)
async def test_malformed_proxy_request_ids_are_replaced(trusted_app: Quart, value: str) -> None:
    response = await trusted_app.test_client().get(
        "/healthz", headers={"X-Request-ID": value}, scope_base=TRUSTED
    )
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_request_id_pattern_refuses_a_trailing_newline() -> None:
    assert REQUEST_ID_RE.fullmatch("abc") and not REQUEST_ID_RE.fullmatch("abc\n")


async def test_lifecycle_lines_carry_the_request_id(trusted_app: Quart) -> None:
    client = trusted_app.test_client()
    login(client, trusted_app)
    with captured_log() as log:
        response = await client.get(
            "/request_tokens", headers={"X-Request-ID": "trace-1"}, scope_base=TRUSTED
        )
    events = log.of("bridge.lifecycle")
    assert [e["msg"] for e in events] == ["session_started", "tokens_issued"]
    assert {e["request_id"] for e in events} == {"trace-1"} == {response.headers["X-Request-ID"]}
    assert all(e["user"] == "alice" and e["avatar"] == "default" for e in events)


async def test_errors_are_logged_once_with_their_code(app: Quart) -> None:
    with captured_log() as log:
        await app.test_client().get("/no/such/page")
    [line] = log.of("bridge.request")
    assert line["status"] == 404 and "outcome" not in line  # outcome: token requests only


# --- the secret scan --------------------------------------------------------------------------


def secrets_in(text: str, secrets: list[str]) -> list[str]:
    return [s[:6] + "..." for s in secrets if s and s in text]


async def test_no_secret_reaches_a_log_line(make_app: Any, fake_state: Any, clock: Clock) -> None:
    settings = make_settings(
        {"lifecycle": {"record_client": True}, "sentifyd": {"refresh_path": "/api/refresh"}},
        env=OPS_ENV,
    )
    application = make_app(settings)
    secrets = [API_KEY, PREMIUM_API_KEY, SITE_KEY, BRIDGE_KEY, ADMIN_TOKEN, METRICS_TOKEN]
    with captured_log() as log:
        async with application.test_app():
            client = application.test_client()
            login(client, application, groups=["customers"])
            secrets.append(site_cookie(application, groups=["customers"]))
            handles = []
            for path in ("/request_tokens", "/request_tokens/premium"):
                body = await (await client.get(path)).get_json()
                handles.append(body["tokens"]["refreshToken"])
            clock.advance(50)  # the refresh goes upstream (refresh_path) this time
            refreshed = await client.get(
                "/request_tokens", query_string={"refreshToken": handles[0]}
            )
            handles.append((await refreshed.get_json())["tokens"]["refreshToken"])
            secrets += [c.value for c in client.cookie_jar]  # type: ignore[attr-defined]
            fake_state.fail = "status:500"
            other = application.test_client()
            login(other, application, "bob")
            assert (await other.get("/request_tokens")).status_code == 502
            fake_state.fail = None
            clock.advance(30)
            # A replay of the rotated handle: theft, the session ends.
            replay = await client.get("/request_tokens", query_string={"refreshToken": handles[0]})
            assert replay.status_code == 401
            admin = application.test_client()
            await admin.get("/admin/users/alice", headers=admin_headers())
            await admin.delete("/admin/users/bob/sessions", headers=admin_headers())
            await admin.get("/admin/users/alice", headers=admin_headers("wrong" * 8))
            await admin.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    secrets += handles + fake_state.issued_access_tokens + fake_state.issued_refresh_tokens
    assert len(secrets) > 12
    assert log.of("bridge.request") and log.of("bridge.lifecycle")
    assert secrets_in(log.text, secrets) == []


@pytest.mark.integration
def test_live_server_logs_carry_no_secret(live_fake: LiveServer, live_bridge_factory: Any) -> None:
    import httpx

    settings = make_settings({"sentifyd": {"backend": live_fake.url}}, env=OPS_ENV)
    with captured_log() as log:
        server, application = live_bridge_factory(settings)
        cookie = site_cookie(application)
        with httpx.Client(base_url=server.url, cookies={"session": cookie}) as http:
            first = http.get("/request_tokens", headers={"X-Request-ID": "not-trusted"})
            handle = first.json()["tokens"]["refreshToken"]
            access = first.json()["tokens"]["accessToken"]
            second = http.get("/request_tokens", params={"refreshToken": handle})
            assert second.status_code == 200
            bridge_cookie = http.cookies.get("sentifyd_bridge")
        server.stop()
    assert first.headers["X-Request-ID"] != "not-trusted"
    lines = log.of("bridge.request")
    assert [line["status"] for line in lines] == [200, 200]
    leaked = secrets_in(log.text, [API_KEY, cookie, bridge_cookie or "", handle, access])
    assert leaked == []
