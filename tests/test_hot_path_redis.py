"""The Redis hot path, counted by Redis itself (INFO commandstats on a real redis-server): a token
request of a session whose tokens are fresh is one read and one conditional write, and takes no
lock; requests that wait for a session's lock are woken by its release, not by polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Quart

from bridge.store.redis import RedisStore, parse_url
from support.app import login
from support.config import make_settings
from support.redis import RedisServer, redis_server  # noqa: F401 - fixture

# What the test's own client sends to read the counts.
OWN_COMMANDS = {
    "cmdstat_info",
    "cmdstat_config|resetstat",
    "cmdstat_hello",
    "cmdstat_client|setinfo",
}


def commands(server: RedisServer) -> dict[str, int]:
    """Calls per command since the last reset (commands that scripts run count too)."""
    with server.client() as client:
        stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name not in OWN_COMMANDS
    }


def reset(server: RedisServer) -> None:
    with server.client() as client:
        client.config_resetstat()


@pytest.fixture
async def app(
    make_app: Callable[..., Quart],
    redis_server: RedisServer,  # noqa: F811
) -> AsyncIterator[Quart]:
    # The limits as bench/ runs them: per_session (a backstop counter) off.
    settings = make_settings({"store": {"url": redis_server.url}, "limits": {"per_session": "off"}})
    application = make_app(settings)
    async with application.test_app():
        yield application


async def test_a_refresh_with_fresh_tokens_is_one_read_and_one_conditional_write(
    app: Quart,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = app.test_client()
    login(client, app)
    first = await client.get("/request_tokens")
    assert first.status_code == 200
    handle = (await first.get_json())["tokens"]["refreshToken"]
    reset(redis_server)

    refreshed = await client.get("/request_tokens", query_string={"refreshToken": handle})

    assert refreshed.status_code == 200
    # GET the record, then one script: SET ... XX GET the record (an ended session's record is
    # gone, so the tombstone needs no look).
    assert commands(redis_server) == {"get": 1, "evalsha": 1, "set": 1}


async def test_a_new_chain_with_fresh_tokens_takes_no_lock(
    app: Quart,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = app.test_client()
    login(client, app)
    assert (await client.get("/request_tokens")).status_code == 200
    reset(redis_server)

    second_tab = await client.get("/request_tokens")

    assert second_tab.status_code == 200
    counted = commands(redis_server)
    # The record's read and conditional write, and the new-chain limit's counter script; no
    # lock (a lock is SET NX + release script with GET and DEL).
    assert counted.pop("get") == 1 and counted.pop("set") == 1
    assert "del" not in counted and "blpop" not in counted
    assert sum(counted.values()) <= 4, counted


async def test_concurrent_refreshes_of_one_session_all_land(
    app: Quart,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """Tabs of one session refreshing at once: each write is re-applied on the one before it,
    so every tab's rotation is kept (each new handle refreshes again)."""
    client = app.test_client()
    login(client, app)
    handles = []
    for _ in range(6):
        answer = await client.get("/request_tokens")
        handles.append((await answer.get_json())["tokens"]["refreshToken"])

    async def refresh(handle: str) -> Any:
        return await client.get("/request_tokens", query_string={"refreshToken": handle})

    answers = await asyncio.gather(*(refresh(h) for h in handles))
    assert [a.status_code for a in answers] == [200] * 6
    rotated = [(await a.get_json())["tokens"]["refreshToken"] for a in answers]
    again = await asyncio.gather(*(refresh(h) for h in rotated))
    assert [a.status_code for a in again] == [200] * 6
    with redis_server.client() as raw:
        assert not [k for k in raw.keys("*:lock:*") if k.endswith(b"}")]  # no lock left held


async def test_lock_waiters_are_woken_by_the_release_not_by_polling(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    store = RedisStore(parse_url(redis_server.url), prefix="t", timeout=2.0, lease=5.0)
    name = store.session_key("lock", "s1")
    try:
        release, holding = asyncio.Event(), asyncio.Event()
        waiting = 5

        async def holder() -> None:
            async with store.lock(name, wait=10):
                holding.set()
                await release.wait()

        async def waiter() -> None:
            async with store.lock(name, wait=10):
                pass

        held = asyncio.ensure_future(holder())
        with redis_server.client() as raw:
            await holding.wait()
            reset(redis_server)
            waiters = [asyncio.ensure_future(waiter()) for _ in range(waiting)]
            for _ in range(500):  # until each waiter has counted itself in and blocked
                if (
                    int(raw.get(name + ":waiters") or 0) >= waiting
                    and commands(redis_server).get("blpop", 0) >= waiting
                ):
                    break
                await asyncio.sleep(0.01)
            blocked = commands(redis_server)
            # Each waiter asked once (the acquire script) and blocked once (BLPOP), however long
            # it waits: no polling.
            assert blocked["evalsha"] == waiting and blocked["blpop"] == waiting
            await asyncio.sleep(0.3)
            assert commands(redis_server) == blocked
            release.set()
            await asyncio.wait_for(asyncio.gather(held, *waiters), 5)
            assert not raw.exists(name)
    finally:
        await store.close()
