"""Lifecycle events: every event and end reason, what they carry, retention and the cap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from quart import Quart

from bridge.errors import ConfigError
from bridge.identity import Identity
from bridge.observe.lifecycle import END_REASONS, Lifecycle
from bridge.store.memory import MemoryStore
from support.app import Clock, bridge_of, login
from support.config import make_settings
from support.ops import ADMIN_TOKEN, admin_headers

UA = "Mozilla/5.0 (X11; Linux x86_64) " + "x" * 400


async def events_of(app: Quart, user: str = "alice") -> list[dict[str, Any]]:
    return await bridge_of(app).lifecycle.recent(user, 200)


async def start(app: Quart, user: str = "alice", **claims: Any) -> Any:
    client = app.test_client()
    login(client, app, user, **claims)
    response = await client.get(
        "/request_tokens",
        headers={"User-Agent": UA},
        scope_base={"client": ("203.0.113.7", 40000)},
    )
    assert response.status_code == 200
    return client, (await response.get_json())["tokens"]["refreshToken"]


async def ended_reason(app: Quart, user: str = "alice") -> str:
    ended = [e for e in await events_of(app, user) if e["event"] == "session_ended"]
    assert ended, "no session_ended event"
    return str(ended[0]["reason"])


# --- what events carry -----------------------------------------------------------------------


async def test_first_request_records_start_and_issue(app: Quart) -> None:
    await start(app)
    started, issued = reversed((await events_of(app))[:2])
    assert started["event"] == "session_started" and issued["event"] == "tokens_issued"
    session_id = bridge_of(app).sessions.sessions_of
    records = await session_id("alice")
    for event in (started, issued):
        assert event["user"] == "alice"
        assert event["session"] == records[0].id
        assert event["avatar"] == "default"
        assert isinstance(event["time"], float)
        assert "client_ip" not in event and "user_agent" not in event  # off by default
    assert len(issued["token_hash"]) == 16 and issued["expires_at"] > issued["time"]


async def test_refresh_records_tokens_refreshed(app: Quart, clock: Clock) -> None:
    client, handle = await start(app)
    clock.advance(50)  # near expiry: the refresh fetches new tokens
    response = await client.get("/request_tokens", query_string={"refreshToken": handle})
    assert response.status_code == 200
    assert (await events_of(app))[0]["event"] == "tokens_refreshed"


async def test_access_denied_is_recorded(app: Quart) -> None:
    client = app.test_client()
    login(client, app, "bob", groups=["visitors"])
    assert (await client.get("/request_tokens/premium")).status_code == 403
    event = (await events_of(app, "bob"))[0]
    assert event["event"] == "access_denied" and event["avatar"] == "premium"


async def test_client_facts_are_recorded_when_configured(make_app: Any) -> None:
    application = make_app(make_settings({"lifecycle": {"record_client": True}}))
    async with application.test_app():
        await start(application)
        event = (await events_of(application))[0]
        assert event["client_ip"] == "203.0.113.7"
        assert event["user_agent"] == UA[:200]


async def test_admin_revocation_does_not_record_the_operator_as_the_client(
    make_app: Any,
) -> None:
    settings = make_settings(
        {"lifecycle": {"record_client": True}}, env={"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}
    )
    application = make_app(settings)
    async with application.test_app():
        await start(application)
        await application.test_client().delete(
            "/admin/users/alice/sessions",
            headers={**admin_headers(), "User-Agent": "curl/8"},
            scope_base={"client": ("10.9.9.9", 1)},
        )
        ended = (await events_of(application))[0]
        assert ended["reason"] == "admin_revoked" and ended["by"] == "admin_api"
        assert "client_ip" not in ended and "user_agent" not in ended


async def test_retention_and_cap_are_configurable(make_app: Any) -> None:
    settings = make_settings({"lifecycle": {"retention": 3600, "max_events": 3}})
    application = make_app(settings)
    async with application.test_app():
        lifecycle = bridge_of(application).lifecycle
        assert (lifecycle.retention, lifecycle.max_events) == (3600, 3)
        for n in range(5):
            await lifecycle.emit("access_denied", user="carol", avatar=str(n))
        assert [e["avatar"] for e in await lifecycle.recent("carol", 10)] == ["4", "3", "2"]


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ({"retention": 10}, "retention"),
        ({"max_events": 0}, "max_events"),
        ({"record_client": "yes"}, "record_client"),
        ({"keep": 1}, "keep"),
    ],
)
def test_bad_lifecycle_settings_are_refused(section: dict[str, Any], value: str) -> None:
    with pytest.raises(ConfigError, match=f"lifecycle.{value}"):
        make_settings({"lifecycle": section})


async def test_events_expire_with_the_retention() -> None:
    store = MemoryStore()
    lifecycle = Lifecycle(store, retention=0.05, max_events=5)
    await lifecycle.emit("access_denied", user="dave")
    assert await lifecycle.recent("dave")
    # The store's own TTL clock is real time; wait on it, bounded.
    for _ in range(100):
        if not await lifecycle.recent("dave"):
            break
        await asyncio.sleep(0.01)
    assert await lifecycle.recent("dave") == []


async def test_unknown_events_and_reasons_are_refused() -> None:
    lifecycle = Lifecycle(MemoryStore())
    with pytest.raises(ValueError):
        await lifecycle.emit("tokens_stolen", user="x")
    with pytest.raises(ValueError):
        await lifecycle.emit("session_ended", user="x", reason="bored")


# --- every end reason ----------------------------------------------------------------------


async def test_reason_site_logout(app: Quart) -> None:
    client, _ = await start(app)
    login(client, app, "mallory")  # the site now says someone else is signed in
    await client.get("/request_tokens")
    assert await ended_reason(app) == "site_logout"


async def test_reason_idle_timeout(app: Quart, clock: Clock) -> None:
    client, _ = await start(app)
    clock.advance(bridge_of(app).settings.session.idle_timeout + 1)
    await client.get("/request_tokens")
    assert await ended_reason(app) == "idle_timeout"


async def test_reason_absolute_timeout(app: Quart, clock: Clock) -> None:
    client, _ = await start(app)
    settings = bridge_of(app).settings.session
    for _ in range(settings.absolute_timeout // settings.idle_timeout + 1):
        clock.advance(settings.idle_timeout - 1)
        login(client, app)  # the site renews its own login cookie (max_age 1 h) as she uses it
        await client.get("/request_tokens")
    assert await ended_reason(app) == "absolute_timeout"


async def test_reason_handle_reuse(app: Quart, clock: Clock) -> None:
    client, handle = await start(app)
    await client.get("/request_tokens", query_string={"refreshToken": handle})
    clock.advance(bridge_of(app).settings.session.refresh_grace + 1)
    await client.get("/request_tokens", query_string={"refreshToken": handle})
    events = await events_of(app)
    assert [e["event"] for e in events[:2]] == ["session_ended", "refresh_handle_reused"]
    assert await ended_reason(app) == "handle_reuse"


async def test_reason_admin_revoked(make_app: Any) -> None:
    application = make_app(make_settings(env={"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}))
    async with application.test_app():
        await start(application)
        admin = application.test_client()
        response = await admin.delete("/admin/users/alice/sessions", headers=admin_headers())
        assert response.status_code == 200
        assert await ended_reason(application) == "admin_revoked"
        assert (await events_of(application))[0]["by"] == "admin_api"


@pytest.mark.parametrize("reason", ["logout", "backchannel_logout", "upstream_refused"])
async def test_reasons_ended_by_the_ways_in(app: Quart, reason: str) -> None:
    # The OIDC routes end sessions through SessionManager.end with these reasons.
    sessions = bridge_of(app).sessions
    ctx = await sessions.create(Identity(subject="erin", method="oidc"))
    await sessions.end(ctx.record, reason)
    assert await ended_reason(app, "erin") == reason
    assert await sessions.sessions_of("erin") == []


def test_every_end_reason_has_a_test() -> None:
    tested = {
        "site_logout",
        "idle_timeout",
        "absolute_timeout",
        "handle_reuse",
        "admin_revoked",
        "logout",
        "backchannel_logout",
        "upstream_refused",
        "evicted",  # tests/test_limits.py, tests/test_traffic.py
        "user_signed_out_device",  # tests/test_account.py
        "user_signed_out_others",  # tests/test_account.py, tests/test_endings.py
    }
    assert tested == set(END_REASONS)
