"""Two ``sentifyd-bridge serve`` processes on a Sentinel-managed Redis, through a failover.

A master, one replica and three ``redis-sentinel`` processes (quorum 2, down-after 1 s), all on
127.0.0.1 without persistence; the bridges know only the sentinels (``redis+sentinel://``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.errors import StoreUnavailable
from bridge.store.redis import RedisStore, parse_url
from support.config import AVATAR_ID
from support.live import LiveServer
from support.redis import (
    BridgeProcess,
    Load,
    SentinelSetup,
    Visitor,
    new_cookie,
    start_all,
    stop_all,
    tls_files,
)

pytestmark = pytest.mark.integration

STORE_TIMEOUT = 0.5
LOCK_WAIT = 3.0


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path / "redis").start()
    yield setup
    setup.stop()


@pytest.fixture
def bridges(
    tmp_path: Path, sentinel: SentinelSetup, live_fake: LiveServer
) -> Iterator[tuple[BridgeProcess, BridgeProcess]]:
    values = {
        "store_url": sentinel.url,
        "prefix": "sbs",
        "store_timeout": STORE_TIMEOUT,
        "lock_wait": LOCK_WAIT,
        "lock_lease": 2.0,
        "backend": live_fake.url,
        "avatar_id": AVATAR_ID,
    }
    pair = (BridgeProcess(tmp_path, "a", **values), BridgeProcess(tmp_path, "b", **values))
    start_all(pair)
    yield pair
    stop_all(pair)


async def test_a_master_failover_is_followed_without_losing_sessions(
    sentinel: SentinelSetup,
    bridges: tuple[BridgeProcess, BridgeProcess],
    live_fake: LiveServer,
) -> None:
    fake = live_fake.app.extensions["fake_sentifyd"]
    async with httpx.AsyncClient(timeout=8.0) as http:
        visitors = [Visitor(f"user{i}") for i in range(6)]
        for i, visitor in enumerate(visitors):
            assert (await visitor.tokens(http, bridges[i % 2])).status_code == 200
        logins = fake.login_calls
        assert sentinel.master_port() == sentinel.master.port

        load = Load(http, bridges, visitors)
        workers = [asyncio.create_task(load.run(v, i)) for i, v in enumerate(visitors)]
        try:
            await load.until(lambda: load.count(200) >= 20, 10)
            down = time.monotonic()
            await asyncio.to_thread(sentinel.master.kill)
            # Every session answers again, through the promoted replica, within 30 s.
            everyone = {v.user for v in visitors}
            await load.until(lambda: load.served(down + 0.1) == everyone, 30)
            failed_over = sentinel.master_port()
        finally:
            load.stopping = True
            await asyncio.gather(*workers)

        assert failed_over == sentinel.replica.port
        assert load.failures == []  # no hang, no dropped connection
        assert {s for _, s, _, _ in load.statuses} <= {200, 503}
        assert {c for _, s, c, _ in load.statuses if s == 503} <= {"store_unavailable"}
        assert load.count(503, down) > 0  # the outage was seen, and answered as one
        assert load.slowest < 3 * STORE_TIMEOUT + LOCK_WAIT
        assert fake.login_calls == logins  # the sessions' tokens came through the failover

        newcomer = Visitor("newcomer")
        assert (await newcomer.tokens(http, bridges[0])).status_code == 200
        assert (await newcomer.tokens(http, bridges[1], newcomer.handles[-1])).status_code == 200
        logins += 1

        # The old master comes back empty; the sentinels make it a replica of the new one.
        await asyncio.to_thread(sentinel.master.start)
        await asyncio.to_thread(sentinel.wait_replica, sentinel.master)
        assert sentinel.master_port() == sentinel.replica.port
        for i, visitor in enumerate([*visitors, newcomer]):
            refreshed = await visitor.tokens(http, bridges[(i + 1) % 2], visitor.handles[-1])
            assert refreshed.status_code == 200, refreshed.text
            assert not new_cookie(refreshed)
        assert fake.login_calls == logins
    for bridge in bridges:
        assert "Traceback" not in bridge.log()


def test_rediss_sentinel_speaks_tls_to_the_data_nodes(tmp_path: Path) -> None:
    setup = SentinelSetup(tmp_path / "redis", tls=tls_files(tmp_path)).start()

    async def use(url: str) -> Any:
        store = RedisStore(parse_url(url), timeout=1.0)
        try:
            await store.set("sbridge:k", {"v": 1}, 30)
            return await store.get("sbridge:k")
        finally:
            await store.close()

    try:
        assert asyncio.run(use(setup.url)) == {"v": 1}
        plain = setup.url.replace("rediss+", "redis+").split("?")[0]
        with pytest.raises(StoreUnavailable):  # the master refuses anything but TLS
            asyncio.run(use(plain))
    finally:
        setup.stop()


def test_a_hung_sentinel_leaves_time_to_ask_the_next(tmp_path: Path) -> None:
    setup = SentinelSetup(tmp_path / "redis").start()

    async def fresh_store_works() -> Any:
        store = RedisStore(parse_url(setup.url), timeout=1.0)  # a new pool: it must ask
        try:
            await store.set("sbridge:k", {"v": 1}, 30)
            return await store.get("sbridge:k")
        finally:
            await store.close()

    try:
        setup.sentinels[0].send_signal(signal.SIGSTOP)  # listed first, and answers nothing
        assert asyncio.run(fresh_store_works()) == {"v": 1}
    finally:
        setup.sentinels[0].send_signal(signal.SIGCONT)
        setup.stop()
