"""A real site's traffic with the default limits, on real servers, every visitor behind one
address (127.0.0.1: an office NAT, a carrier's shared address, a proxy not yet trusted).

On the memory store with one bridge, and on Redis with two bridges that share it (visitors'
requests alternate between them, so every limit must be shared through the store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from support.traffic import COOKIE, STORES, Stack, stack_factory  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

TIMEOUT = 20.0
PARALLEL = 25  # browsers talking to the bridge at any moment


async def _customer(stack: Stack, n: int, tabs: int) -> list[int]:
    """A signed-in customer: the avatar page, ``tabs`` first requests, one refresh per tab."""
    statuses = []
    cookies = {"session": stack.site_cookie(f"customer{n}", groups=["customers"])}
    async with httpx.AsyncClient(timeout=TIMEOUT, cookies=cookies) as browser:
        page = await browser.get(f"{stack.url(n)}/", headers={"Accept": "text/html"})
        statuses.append(page.status_code)
        handles = []
        for tab in range(tabs):
            first = await browser.get(f"{stack.url(n + tab)}/request_tokens")
            statuses.append(first.status_code)
            if first.status_code == 200:
                handles.append(first.json()["tokens"]["refreshToken"])
        for tab, handle in enumerate(handles):
            refresh = await browser.get(
                f"{stack.url(n + tab + 1)}/request_tokens", params={"refreshToken": handle}
            )
            statuses.append(refresh.status_code)
    return statuses


@pytest.mark.parametrize("kind", STORES)
async def test_300_customers_behind_one_address_are_all_served(
    stack_factory: Callable[..., Stack],  # noqa: F811
    kind: str,
) -> None:
    stack = stack_factory(kind)  # the default limits; the clock stands still: one minute
    gate = asyncio.Semaphore(PARALLEL)

    async def one(n: int) -> list[int]:
        async with gate:
            return await _customer(stack, n, tabs=3 if n % 10 == 0 else 1)

    results = await asyncio.gather(*(one(n) for n in range(300)))
    statuses = [s for result in results for s in result]
    assert len(statuses) == 300 * 3 + 30 * 4
    assert set(statuses) == {200}
    assert stack.upstream.state.login_calls == 300  # one per session, shared by its tabs


@pytest.mark.parametrize("kind", STORES)
async def test_one_account_without_the_cookie_gets_at_most_ten_logins(
    stack_factory: Callable[..., Stack],  # noqa: F811
    kind: str,
) -> None:
    stack = stack_factory(kind)
    site = {"session": stack.site_cookie("scripted")}
    statuses, sessions = [], []
    for n in range(60):  # a script that never keeps the bridge's cookie
        async with httpx.AsyncClient(timeout=TIMEOUT, cookies=site) as script:
            response = await script.get(f"{stack.url(n)}/request_tokens")
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["error"] == "rate_limited"
                assert 1 <= int(response.headers["Retry-After"]) <= 60
            else:
                sessions.append(script.cookies[COOKIE])
        stack.clock.advance(0.01)  # so that "oldest" means something
    assert statuses.count(200) == 10 and statuses.count(429) == 50
    assert stack.upstream.state.login_calls == 10

    store = stack.inspector()
    sessions_key = stack.bridge.sessions.user_key("scripted")
    try:
        assert len(await store.set_members(sessions_key)) == 10
        stack.clock.advance(60)  # the next minute: one more new session, the oldest goes
        async with httpx.AsyncClient(timeout=TIMEOUT, cookies=site) as script:
            assert (await script.get(f"{stack.url(1)}/request_tokens")).status_code == 200
        live = await store.set_members(sessions_key)
        assert len(live) == 10
        oldest = stack.bridge.sessions.session_id(sessions[0])
        assert oldest not in live
        assert await store.get(stack.bridge.sessions.record_key(oldest)) is None
        events = await store.list_range(store.key("events", "scripted"), 100)
        evicted = [e for e in events if e.get("reason") == "evicted"]
        assert [e["session"] for e in evicted] == [oldest]
        assert stack.upstream.state.login_calls == 11
    finally:
        if store is not stack.bridge.store:
            await store.close()
    async with httpx.AsyncClient(timeout=TIMEOUT) as gone:  # the evicted cookie starts over
        again = await gone.get(
            f"{stack.url(0)}/request_tokens", headers={"Cookie": f"{COOKIE}={sessions[0]}"}
        )
        assert again.status_code == 401


@pytest.mark.parametrize("kind", STORES)
async def test_a_first_request_flood_leaves_the_open_tab_refreshing(
    stack_factory: Callable[..., Stack],  # noqa: F811
    kind: str,
) -> None:
    stack = stack_factory(kind)
    cookies = {"session": stack.site_cookie("flooded")}
    async with httpx.AsyncClient(timeout=TIMEOUT, cookies=cookies) as browser:
        tab = await browser.get(f"{stack.url(0)}/request_tokens")
        assert tab.status_code == 200
        handle = tab.json()["tokens"]["refreshToken"]
        flood = await asyncio.gather(
            *(browser.get(f"{stack.url(n)}/request_tokens") for n in range(100))
        )
        codes = [r.status_code for r in flood]
        assert set(codes) == {200, 429} and codes.count(429) >= 70
        assert all(int(r.headers["Retry-After"]) >= 1 for r in flood if r.status_code == 429)
        refresh = await browser.get(
            f"{stack.url(1)}/request_tokens", params={"refreshToken": handle}
        )
        assert refresh.status_code == 200


@pytest.mark.parametrize("kind", STORES)
async def test_twenty_tabs_of_one_session_opening_at_once_share_one_upstream_call(
    stack_factory: Callable[..., Stack],  # noqa: F811
    kind: str,
) -> None:
    stack = stack_factory(kind)
    cookies = {"session": stack.site_cookie("tabby", groups=["customers"])}
    async with httpx.AsyncClient(timeout=TIMEOUT, cookies=cookies) as browser:
        assert (await browser.get(f"{stack.url(0)}/request_tokens")).status_code == 200
        before = stack.upstream.state.login_calls
        # Twenty tabs of the premium avatar, whose tokens this session does not hold yet.
        tabs = await asyncio.gather(
            *(browser.get(f"{stack.url(n)}/request_tokens/premium") for n in range(20))
        )
        assert [t.status_code for t in tabs] == [200] * 20
        assert len({t.json()["tokens"]["refreshToken"] for t in tabs}) == 20
        assert len({t.json()["tokens"]["accessToken"] for t in tabs}) == 1
        assert stack.upstream.state.login_calls == before + 1


@pytest.mark.parametrize("kind", STORES)
async def test_the_avatars_upstream_quota_is_shared_by_every_instance(
    stack_factory: Callable[..., Stack],  # noqa: F811
    kind: str,
) -> None:
    stack = stack_factory(kind, limits={"upstream_logins_per_avatar": "3/minute"})
    browsers = []
    for n in range(3):
        browser = httpx.AsyncClient(
            timeout=TIMEOUT, cookies={"session": stack.site_cookie(f"q{n}")}
        )
        browsers.append(browser)
        assert (await browser.get(f"{stack.url(n)}/request_tokens")).status_code == 200
    try:
        async with httpx.AsyncClient(
            timeout=TIMEOUT, cookies={"session": stack.site_cookie("late")}
        ) as late:
            for n in range(2):  # on each instance: the quota is spent for both
                busy = await late.get(f"{stack.url(n)}/request_tokens")
                assert busy.status_code == 503
                assert busy.json()["error"] == "upstream_busy"
                assert int(busy.headers["Retry-After"]) >= 1
        for n, browser in enumerate(browsers):  # cached tokens need no login
            assert (await browser.get(f"{stack.url(n + 1)}/request_tokens")).status_code == 200
        assert stack.upstream.state.login_calls == 3
    finally:
        for browser in browsers:
            await browser.aclose()


@pytest.mark.parametrize("kind", STORES)
async def test_anonymous_refusals_are_counted_per_address_across_instances(
    stack_factory: Callable[..., Stack],  # noqa: F811
    kind: str,
) -> None:
    stack = stack_factory(kind, limits={"per_ip": "4/minute"})
    cookies = {"session": stack.site_cookie("regular")}
    async with httpx.AsyncClient(timeout=TIMEOUT, cookies=cookies) as customer:
        assert (await customer.get(f"{stack.url(0)}/request_tokens")).status_code == 200
        async with httpx.AsyncClient(timeout=TIMEOUT) as stranger:
            codes = [
                (await stranger.get(f"{stack.url(n)}/request_tokens")).status_code for n in range(6)
            ]
        assert codes == [401] * 4 + [429] * 2  # one count, whichever instance answered
        for n in range(2):  # the customer's live session is not anonymous work
            assert (await customer.get(f"{stack.url(n)}/request_tokens")).status_code == 200
