"""The chain policy through a real ``sentifyd-bridge serve`` process, in real time: a customer
reading a page every 2.07 s (29 a minute, the default limits) past ``max_chains`` is served on
every page, and the first tab, evicted long ago, refreshes with the same Sentifyd login."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from support.config import API_KEY, AVATAR_ID, serve_config, write_bridge_toml
from support.live import LiveServer
from support.redis import BridgeProcess, Visitor

pytestmark = pytest.mark.integration

PAGE_VIEW_EVERY = 60 / 29 + 0.01
PAGE_VIEWS = 10
MAX_CHAINS = 4


@pytest.fixture
def sentifyd() -> Iterator[LiveServer]:
    server = LiveServer(create_fake_sentifyd({API_KEY: AVATAR_ID}, token_ttl=3600)).start()
    yield server
    server.stop()


async def test_page_views_past_max_chains_are_all_served_and_the_first_tab_recovers(
    tmp_path: Path, sentifyd: LiveServer, store_url: str
) -> None:
    # The defaults, limits included; only the room for tabs is small, so that a short run
    # passes it.
    config = write_bridge_toml(
        tmp_path / "bridge.toml",
        **serve_config(sentifyd.url, session={"max_chains": MAX_CHAINS}, store={"url": store_url}),
    )
    bridge = BridgeProcess(tmp_path, "bridge", config_path=config).start()
    try:
        visitor = Visitor("alice")
        async with httpx.AsyncClient(timeout=10) as http:
            statuses = []
            for _ in range(PAGE_VIEWS):
                statuses.append((await visitor.tokens(http, bridge)).status_code)
                await asyncio.sleep(PAGE_VIEW_EVERY)  # the customer's pace, in real time
            assert statuses == [200] * PAGE_VIEWS
            first_tab = visitor.handles[0]
            recovered = await visitor.tokens(http, bridge, first_tab)
            assert recovered.status_code == 200, recovered.text
    finally:
        bridge.stop()
    state = sentifyd.app.extensions["fake_sentifyd"]
    assert state.login_calls == 1
    log = bridge.log()
    assert "refresh_handle_reused" not in log and "session_ended" not in log
    assert "session_started" in log  # the lifecycle is logged, so the absence above means it


async def test_300_customers_behind_one_address_with_tabs_are_all_served_by_serve(
    tmp_path: Path, sentifyd: LiveServer, store_url: str
) -> None:
    # Everything at serve's defaults (the limits, the store's timeout, the garbage collector
    # fitted to a server by tune_gc): 300 signed-in customers from 127.0.0.1, one in ten with
    # three tabs, 25 browsers at a time; each tab's first request, then one refresh per tab.
    config = write_bridge_toml(
        tmp_path / "bridge.toml", **serve_config(sentifyd.url, store={"url": store_url})
    )
    bridge = BridgeProcess(tmp_path, "bridge", config_path=config).start()
    gate = asyncio.Semaphore(25)

    async def customer(http: httpx.AsyncClient, n: int) -> list[int]:
        visitor = Visitor(f"customer{n}")
        async with gate:
            firsts = [await visitor.tokens(http, bridge) for _ in range(3 if n % 10 == 0 else 1)]
            refreshes = [await visitor.tokens(http, bridge, h) for h in list(visitor.handles)]
        return [r.status_code for r in firsts + refreshes]

    try:
        async with httpx.AsyncClient(timeout=20) as http:
            results = await asyncio.gather(*(customer(http, n) for n in range(300)))
    finally:
        bridge.stop()
    statuses = [s for result in results for s in result]
    assert len(statuses) == 300 * 2 + 30 * 4
    assert set(statuses) == {200}
    assert sentifyd.app.extensions["fake_sentifyd"].login_calls == 300  # one per session
    assert "Traceback" not in bridge.log()
