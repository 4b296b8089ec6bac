"""The chain policy: a page view is never refused for want of room, an evicted tab recovers on
its next refresh, a replay on a chain that still exists is theft, and the record stays bounded.

Each test runs on the memory store and on a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge.broker import MAX_EVICTED
from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.sessions.manager import SPENT_BYTES, Chain
from support.app import Clock, bridge_of, login
from support.config import API_KEY, AVATAR_ID, PREMIUM_API_KEY, PREMIUM_ID
from support.config import make_settings as base_settings

HOUR = 3600
# 29 a minute, just under the default new_chains_per_session = 30/minute.
PAGE_VIEW_EVERY = 60 / 29 + 0.001


@pytest.fixture
def fake() -> Quart:
    # Sentifyd's tokens as they are measured: one hour.
    return create_fake_sentifyd({API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID}, token_ttl=HOUR)


@pytest.fixture
def make_bridge(make_app: Callable[..., Quart], store_url: str) -> Callable[..., Any]:
    """An app on the parametrized store, with the default limits and ``session`` overrides."""

    def factory(**session: Any) -> Quart:
        return make_app(base_settings({"session": session, "store": {"url": store_url}}))

    return factory


@pytest.fixture
async def app(make_bridge: Callable[..., Quart]) -> AsyncIterator[Quart]:
    application = make_bridge()
    async with application.test_app():
        yield application


@pytest.fixture
async def small(make_bridge: Callable[..., Quart]) -> AsyncIterator[Quart]:
    """Room for three tabs."""
    application = make_bridge(max_chains=3)
    async with application.test_app():
        yield application


async def page_view(client: Client) -> str:
    response = await client.get("/request_tokens")
    assert response.status_code == 200, await response.get_data()
    handle: str = (await response.get_json())["tokens"]["refreshToken"]
    return handle


async def refresh(client: Client, handle: str) -> Any:
    return await client.get("/request_tokens", query_string={"refreshToken": handle})


async def refreshed(client: Client, handle: str) -> str:
    response = await refresh(client, handle)
    assert response.status_code == 200, await response.get_data()
    new: str = (await response.get_json())["tokens"]["refreshToken"]
    return new


async def events(app: Quart) -> list[str]:
    return [e["event"] for e in await bridge_of(app).lifecycle.recent("alice", 1000)]


async def the_record(app: Quart) -> Any:
    [record] = await bridge_of(app).sessions.sessions_of("alice")
    return record


async def test_two_hundred_page_views_at_29_a_minute_are_all_served(
    app: Quart, clock: Clock, fake_state: Any
) -> None:
    client = app.test_client()
    login(client, app)
    handles = []
    for _ in range(200):
        handles.append(await page_view(client))
        clock.advance(PAGE_VIEW_EVERY)
    # The very first tab, evicted long ago, refreshes: the same session's tokens, no login.
    assert await refreshed(client, handles[0])
    assert fake_state.login_calls == 1
    assert "refresh_handle_reused" not in await events(app)
    record = await the_record(app)
    assert len(record.chains) == 64
    # 136 evicted; the first one's mark was taken back, and its new chain evicted another.
    assert len(record.evicted) == (200 - 64) * SPENT_BYTES


async def test_a_new_tab_beyond_the_cap_evicts_the_least_recently_used(
    small: Quart, clock: Clock
) -> None:
    client = small.test_client()
    login(client, small)
    tabs = []
    for _ in range(3):
        tabs.append(await page_view(client))
        clock.advance(1)
    one, two, three = tabs
    await refreshed(client, one)  # the first tab is used again: the second is the oldest now
    clock.advance(5)
    await page_view(client)
    record = await the_record(small)
    assert len(record.chains) == 3
    assert record.take_evicted("default", _hash(two))
    assert not record.take_evicted("default", _hash(three))


async def test_an_evicted_tab_recovers_as_a_new_tab_of_the_session(
    small: Quart, clock: Clock, fake_state: Any
) -> None:
    client = small.test_client()
    login(client, small)
    tabs = [await page_view(client) for _ in range(6)]  # the first three were evicted
    for handle in tabs:
        clock.advance(1)
        next_handle = await refreshed(client, handle)
        assert await refreshed(client, next_handle)  # and the new chain rotates on
    assert fake_state.login_calls == 1
    assert "refresh_handle_reused" not in await events(small)
    assert len((await the_record(small)).chains) == 3


async def test_a_duplicate_recovery_within_the_grace_window_gets_the_same_answer(
    small: Quart, clock: Clock
) -> None:
    client = small.test_client()
    login(client, small)
    evicted = [await page_view(client) for _ in range(4)][0]
    one = await refresh(client, evicted)
    clock.advance(5)
    two = await refresh(client, evicted)
    one_tokens, two_tokens = (await one.get_json())["tokens"], (await two.get_json())["tokens"]
    assert two_tokens["refreshToken"] == one_tokens["refreshToken"]
    assert two_tokens["accessToken"] == one_tokens["accessToken"]


async def test_an_evicted_handle_presented_again_after_the_grace_window_is_theft(
    small: Quart, clock: Clock
) -> None:
    client = small.test_client()
    login(client, small)
    evicted = [await page_view(client) for _ in range(4)][0]
    assert await refreshed(client, evicted)
    clock.advance(11)
    replay = await refresh(client, evicted)
    assert replay.status_code == 401
    assert (await events(small))[:2] == ["session_ended", "refresh_handle_reused"]


async def test_a_rotated_handle_replayed_on_a_live_chain_is_still_theft(
    app: Quart, clock: Clock
) -> None:
    client = app.test_client()
    login(client, app)
    first = await page_view(client)
    for _ in range(100):  # evictions all around it
        clock.advance(PAGE_VIEW_EVERY)
        await page_view(client)
    second = await refreshed(client, first)  # recovered: a chain that exists again
    clock.advance(PAGE_VIEW_EVERY)
    await refreshed(client, second)
    clock.advance(11)
    replay = await refresh(client, second)
    assert replay.status_code == 401
    assert (await events(app))[:2] == ["session_ended", "refresh_handle_reused"]
    assert await bridge_of(app).sessions.sessions_of("alice") == []


async def test_an_evicted_handle_is_bound_to_its_avatar(small: Quart) -> None:
    client = small.test_client()
    login(client, small, groups=["customers"])
    evicted = [await page_view(client) for _ in range(4)][0]
    other = await client.get("/request_tokens/premium", query_string={"refreshToken": evicted})
    assert other.status_code == 401
    assert (await other.get_json())["error"] == "invalid_refresh_token"
    assert await refreshed(client, evicted)  # still good for its own avatar


async def test_what_is_kept_of_evicted_tabs_is_bounded(small: Quart, clock: Clock) -> None:
    client = small.test_client()
    login(client, small)
    handles = []
    for _ in range(MAX_EVICTED + 20):
        clock.advance(PAGE_VIEW_EVERY)
        handles.append(await page_view(client))
    record = await the_record(small)
    assert len(record.chains) == 3
    assert len(record.evicted) == MAX_EVICTED * SPENT_BYTES
    # The oldest evicted tabs are forgotten (a plain 401, no theft); the newest still recover.
    forgotten = await refresh(client, handles[0])
    assert forgotten.status_code == 401
    assert "refresh_handle_reused" not in await events(small)
    assert await refreshed(client, handles[-4])
    assert await refreshed(client, handles[-3 - MAX_EVICTED])


def _hash(handle: str) -> str:
    from bridge.sessions.sealing import digest

    return digest(handle)


# --- the marks of retired handles, on their own


def a_chain(**marks: Any) -> Chain:
    return Chain(id="c1", avatar="default", current="f" * 64, created_at=0.0, **marks)


def test_a_handle_retired_in_the_hex_form_earlier_versions_wrote_is_spent() -> None:
    assert a_chain(retired=["a" * 64]).has_spent("a" * 64)


def test_a_mark_straddling_two_spent_marks_is_not_spent() -> None:
    chain = a_chain(spent=bytes.fromhex("11" * 8 + "22" * 8))
    straddling = ("11" * 4 + "22" * 4) + "0" * 48
    assert not chain.has_spent(straddling)
    assert chain.has_spent("11" * 8 + "0" * 48) and chain.has_spent("22" * 8 + "0" * 48)


def test_spending_moves_every_hex_retired_handle_into_the_marks() -> None:
    chain = a_chain(retired=["a" * 64, "b" * 64])
    chain.spend("c" * 64, keep=10)
    assert chain.retired == [] and len(chain.spent) == 3 * SPENT_BYTES
    assert all(chain.has_spent(h * 64) for h in "abc")


# --- the grace window and what a rotation records


async def newest(app: Quart, name: str) -> dict[str, Any]:
    return next(
        e for e in await bridge_of(app).lifecycle.recent("alice", 1000) if e["event"] == name
    )


async def test_a_duplicate_refresh_at_the_end_of_the_grace_window_gets_the_same_answer(
    app: Quart, clock: Clock
) -> None:
    client = app.test_client()
    login(client, app)
    handle = await page_view(client)
    one = await refresh(client, handle)
    clock.advance(10)  # [session] refresh_grace = 10 s: its last instant still answers
    two = await refresh(client, handle)
    assert two.status_code == 200
    one_tokens, two_tokens = (await one.get_json())["tokens"], (await two.get_json())["tokens"]
    assert two_tokens["refreshToken"] == one_tokens["refreshToken"]
    assert "refresh_handle_reused" not in await events(app)


async def test_a_duplicate_refresh_for_another_avatar_is_refused(app: Quart) -> None:
    client = app.test_client()
    login(client, app, groups=["customers"])
    handle = await page_view(client)
    assert await refreshed(client, handle)
    other = await client.get("/request_tokens/premium", query_string={"refreshToken": handle})
    assert other.status_code == 401
    assert (await other.get_json())["error"] == "invalid_refresh_token"


async def test_new_tokens_are_recorded_with_their_session_avatar_expiry_and_hash(
    app: Quart, clock: Clock
) -> None:
    client = app.test_client()
    login(client, app)
    response = await client.get("/request_tokens")
    access = (await response.get_json())["tokens"]["accessToken"]
    issued = await newest(app, "tokens_issued")
    record = await the_record(app)
    assert issued["session"] == record.id and issued["avatar"] == "default"
    assert issued["expires_at"] == round(clock.now + HOUR)
    assert issued["token_hash"] == _hash(access)[:16]


async def test_a_refresh_that_fetches_new_tokens_is_recorded_as_tokens_refreshed(
    make_bridge: Callable[..., Quart], clock: Clock
) -> None:
    app = make_bridge(idle_timeout=2 * HOUR)
    async with app.test_app():
        client = app.test_client()
        login(client, app)
        handle = await page_view(client)
        # Past half their life: a component refreshing is not handed the same ageing tokens.
        clock.advance(HOUR / 2 + 1)
        response = await refresh(client, handle)
        assert response.status_code == 200, await response.get_data()
        access = (await response.get_json())["tokens"]["accessToken"]
        refreshed_event = await newest(app, "tokens_refreshed")
        assert refreshed_event["token_hash"] == _hash(access)[:16]


async def test_a_reused_handle_is_recorded_with_its_session(app: Quart, clock: Clock) -> None:
    client = app.test_client()
    login(client, app)
    handle = await page_view(client)
    session_id = (await the_record(app)).id
    assert await refreshed(client, handle)
    clock.advance(11)
    assert (await refresh(client, handle)).status_code == 401
    reused = await newest(app, "refresh_handle_reused")
    ended = await newest(app, "session_ended")
    assert reused["session"] == session_id
    assert ended["session"] == session_id


# --- when cached tokens are fresh enough to hand out


@pytest.fixture
async def long_idle(make_app: Callable[..., Quart], store_url: str) -> AsyncIterator[Quart]:
    """Sessions that outlive their one-hour tokens, and a refresh margin above a quarter hour."""
    settings = base_settings(
        {
            "session": {"idle_timeout": 2 * HOUR},
            "sentifyd": {"refresh_margin": 1000},
            "store": {"url": store_url},
        }
    )
    application = make_app(settings)
    async with application.test_app():
        yield application


async def test_the_refresh_margin_is_at_most_a_quarter_of_the_tokens_life(
    long_idle: Quart, clock: Clock, fake_state: Any
) -> None:
    client = long_idle.test_client()
    login(client, long_idle)
    await page_view(client)
    clock.advance(HOUR - 800)  # 800 s left: inside a quarter of the hour (900 s), not a fifth
    await page_view(client)
    assert fake_state.login_calls == 2


async def test_tokens_with_just_the_refresh_margin_left_are_not_handed_out(
    make_bridge: Callable[..., Quart], clock: Clock, fake_state: Any
) -> None:
    app = make_bridge(idle_timeout=2 * HOUR)
    async with app.test_app():
        client = app.test_client()
        login(client, app)
        await page_view(client)
        clock.advance(HOUR - 30)  # [sentifyd] refresh_margin = 30 s left, exactly
        await page_view(client)
        assert fake_state.login_calls == 2


async def test_fresh_tokens_are_answered_without_the_session_lock(app: Quart) -> None:
    client = app.test_client()
    login(client, app)
    await page_view(client)
    bridge = bridge_of(app)
    record = await the_record(app)
    async with bridge.store.lock(bridge.sessions.lock_name(record.id), wait=1):
        assert await page_view(client)


async def test_requests_queued_behind_a_failing_sentifyd_call_share_its_failure(
    make_bridge: Callable[..., Quart], clock: Clock, fake_state: Any
) -> None:
    app = make_bridge(idle_timeout=2 * HOUR)
    async with app.test_app():
        client = app.test_client()
        login(client, app)
        await page_view(client)
        clock.advance(HOUR)  # the tokens expired: both requests need Sentifyd
        fake_state.latency = 0.2  # the first call is still out when the second queues
        fake_state.fail, fake_state.fail_count = "status:401", 1  # and only that one fails
        first, second = await asyncio.gather(
            client.get("/request_tokens"), client.get("/request_tokens")
        )
        assert [first.status_code, second.status_code] == [502, 502]
        assert fake_state.login_calls == 2  # the session's first, and the one that failed


async def test_expires_in_never_rounds_a_tokens_life_up(
    make_app: Callable[..., Quart], store_url: str, clock: Clock
) -> None:
    settings = base_settings(
        {
            "session": {"idle_timeout": 2 * HOUR},
            "sentifyd": {"refresh_margin": 0},
            "store": {"url": store_url},
        }
    )
    app = make_app(settings)
    async with app.test_app():
        client = app.test_client()
        login(client, app)
        await page_view(client)
        clock.advance(HOUR - 0.5)  # half a second left, and no margin asked for
        response = await client.get("/request_tokens")
        assert (await response.get_json())["tokens"]["expiresIn"] == 0
