"""Prometheus metrics at /metrics: access rules and values that move with the traffic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from quart import Quart

from support.app import Clock, bridge_of, login
from support.config import make_settings
from support.ops import METRICS_TOKEN, OPS_ENV, admin_headers, metric

SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
async def metrics_app(make_app: Any) -> AsyncIterator[Quart]:
    application = make_app(make_settings(env={"BRIDGE_METRICS_TOKEN": METRICS_TOKEN}))
    async with application.test_app():
        yield application


async def scrape(app: Quart) -> str:
    response = await app.test_client().get("/metrics", headers=SCRAPE)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return (await response.get_data()).decode()


# --- access ---------------------------------------------------------------------------------


async def test_each_token_opens_only_its_own_door(make_app: Any) -> None:
    """The admin token is not a metrics token, nor the metrics token an admin token."""
    application = make_app(make_settings(env=OPS_ENV))
    async with application.test_app():
        client = application.test_client()
        as_admin = await client.get("/metrics", headers=admin_headers())
        assert as_admin.status_code == 401
        assert (await as_admin.get_json())["error"] == "unauthorized"
        assert (await client.get("/admin/sessions", headers=SCRAPE)).status_code == 401
        assert (await client.get("/metrics", headers=SCRAPE)).status_code == 200
        assert (await client.get("/admin/sessions", headers=admin_headers())).status_code == 200


async def test_metrics_are_off_without_a_token_by_default(app: Quart) -> None:
    response = await app.test_client().get("/metrics")
    assert response.status_code == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}])
async def test_metrics_need_the_metrics_token(metrics_app: Quart, headers: dict[str, str]) -> None:
    response = await metrics_app.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "unauthorized"


async def test_open_metrics_when_asked_for(make_app: Any) -> None:
    application = make_app(make_settings({"metrics": {"require_token": False}}))
    async with application.test_app():
        response = await application.test_client().get("/metrics")
        assert response.status_code == 200


async def test_metrics_can_be_disabled(make_app: Any) -> None:
    settings = make_settings(
        {"metrics": {"enabled": False}}, env={"BRIDGE_METRICS_TOKEN": METRICS_TOKEN}
    )
    application = make_app(settings)
    async with application.test_app():
        response = await application.test_client().get("/metrics", headers=SCRAPE)
        assert response.status_code == 404


def test_apps_do_not_share_a_registry(make_app: Any) -> None:
    one, two = make_app(), make_app()
    assert bridge_of(one).metrics.registry is not bridge_of(two).metrics.registry


# --- values ---------------------------------------------------------------------------------


async def test_token_requests_are_counted_by_avatar_and_outcome(metrics_app: Quart) -> None:
    client = metrics_app.test_client()
    await client.get("/request_tokens")  # not signed in
    login(client, metrics_app, groups=["visitors"])
    await client.get("/request_tokens")
    await client.get("/request_tokens")
    await client.get("/request_tokens/premium")  # not allowed
    await client.get("/request_tokens/nope")  # no such avatar: never a label of its own
    text = await scrape(metrics_app)
    name = "sentifyd_bridge_token_requests_total"
    assert metric(text, name, avatar="default", status="401", outcome="login_required") == 1
    assert metric(text, name, avatar="default", status="200", outcome="ok") == 2
    assert metric(text, name, avatar="premium", status="403", outcome="forbidden") == 1
    assert metric(text, name, avatar="unknown", status="404", outcome="unknown_avatar") == 1
    assert "nope" not in text


async def test_cache_hits_and_misses_are_counted(metrics_app: Quart, clock: Clock) -> None:
    client = metrics_app.test_client()
    login(client, metrics_app)
    for _ in range(3):
        await client.get("/request_tokens")
    clock.advance(55)
    await client.get("/request_tokens")
    text = await scrape(metrics_app)
    assert metric(text, "sentifyd_bridge_token_cache_total", result="miss") == 2
    assert metric(text, "sentifyd_bridge_token_cache_total", result="hit") == 2


async def test_a_request_that_found_tokens_fetched_while_it_waited_counts_as_a_hit(
    metrics_app: Quart, clock: Clock, fake_state: Any
) -> None:
    client = metrics_app.test_client()
    login(client, metrics_app)
    await client.get("/request_tokens")  # a miss: the session's first tokens
    clock.advance(55)  # they expired
    fake_state.latency = 0.2  # the first fetch is still out when the second request queues
    await asyncio.gather(client.get("/request_tokens"), client.get("/request_tokens"))
    assert fake_state.login_calls == 2
    text = await scrape(metrics_app)
    assert metric(text, "sentifyd_bridge_token_cache_total", result="miss") == 2
    assert metric(text, "sentifyd_bridge_token_cache_total", result="hit") == 1


async def test_upstream_calls_are_counted_and_timed(metrics_app: Quart, fake_state: Any) -> None:
    client = metrics_app.test_client()
    login(client, metrics_app)
    await client.get("/request_tokens")
    fake_state.fail = "status:401"
    client2 = metrics_app.test_client()
    login(client2, metrics_app, "bob")
    assert (await client2.get("/request_tokens")).status_code == 502
    text = await scrape(metrics_app)
    calls = "sentifyd_bridge_upstream_calls_total"
    assert metric(text, calls, call="login", outcome="ok") == 1
    assert metric(text, calls, call="login", outcome="upstream_rejected") == 1
    assert metric(text, "sentifyd_bridge_upstream_call_seconds_count", call="login") == 2
    assert (
        metric(text, "sentifyd_bridge_upstream_call_seconds_bucket", call="login", le="+Inf") == 2
    )


async def test_upstream_unreachable_is_counted(make_app: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    settings = make_settings(env={"BRIDGE_METRICS_TOKEN": METRICS_TOKEN})
    application = make_app(settings, sentifyd_transport=httpx.MockTransport(refuse))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        assert (await client.get("/request_tokens")).status_code == 502
        text = await scrape(application)
        calls = "sentifyd_bridge_upstream_calls_total"
        assert metric(text, calls, call="login", outcome="upstream_unavailable") == 1


async def test_active_sessions_follow_the_store(metrics_app: Quart, clock: Clock) -> None:
    assert metric(await scrape(metrics_app), "sentifyd_bridge_active_sessions") == 0
    clients = []
    for user in ("alice", "bob", "carol"):
        client = metrics_app.test_client()
        login(client, metrics_app, user)
        await client.get("/request_tokens")
        clients.append(client)
    assert metric(await scrape(metrics_app), "sentifyd_bridge_active_sessions") == 3
    login(clients[0], metrics_app, "mallory")  # alice signed out of the site
    await clients[0].get("/request_tokens")  # ...ends her session, starts mallory's
    bridge = bridge_of(metrics_app)
    record = (await bridge.sessions.sessions_of("bob"))[0]
    await bridge.sessions.end(record, "logout")
    assert metric(await scrape(metrics_app), "sentifyd_bridge_active_sessions") == 2


async def test_handle_reuse_and_session_ends_are_counted(metrics_app: Quart, clock: Clock) -> None:
    client = metrics_app.test_client()
    login(client, metrics_app)
    handle = (await (await client.get("/request_tokens")).get_json())["tokens"]["refreshToken"]
    await client.get("/request_tokens", query_string={"refreshToken": handle})
    clock.advance(30)
    assert (
        await client.get("/request_tokens", query_string={"refreshToken": handle})
    ).status_code == 401
    text = await scrape(metrics_app)
    assert metric(text, "sentifyd_bridge_refresh_handle_reuses_total") == 1
    events = "sentifyd_bridge_lifecycle_events_total"
    assert metric(text, events, event="session_ended", reason="handle_reuse") == 1
    assert metric(text, events, event="session_started", reason="") == 1


async def test_rate_limited_requests_are_counted(make_app: Any) -> None:
    settings = make_settings(
        {"limits": {"per_session": "2/minute"}}, env={"BRIDGE_METRICS_TOKEN": METRICS_TOKEN}
    )
    application = make_app(settings)
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        # The first request has no bridge cookie yet: it counts as the user's new session.
        statuses = [(await client.get("/request_tokens")).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        text = await scrape(application)
        assert metric(text, "sentifyd_bridge_rate_limited_requests_total", scope="session") == 2
        assert metric(text, "sentifyd_bridge_rate_limited_requests_total", scope="ip") == 0
        name = "sentifyd_bridge_token_requests_total"
        assert metric(text, name, avatar="default", status="429", outcome="rate_limited") == 2


async def test_a_new_tab_beyond_the_cap_is_served_not_counted_as_limited(make_app: Any) -> None:
    settings = make_settings(
        {"session": {"max_chains": 2}}, env={"BRIDGE_METRICS_TOKEN": METRICS_TOKEN}
    )
    application = make_app(settings)
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        statuses = [(await client.get("/request_tokens")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]  # the least recently used tab is evicted
        text = await scrape(application)
        assert metric(text, "sentifyd_bridge_rate_limited_requests_total", scope="tabs") == 0
