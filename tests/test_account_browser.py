"""'Sign out all other devices' in a real browser (Debian's Chromium, driven by Playwright).

Alice uses the avatar in three browsers (three browser contexts, each its own cookies and user
agent). From the first she opens "My devices" and signs out the others: their components' next
token requests get 401 at once, and the first one's keeps working. Once on the demo (one
instance, memory store) and once on two instances sharing a real Redis, the page served by one
and the other browsers' token requests answered by the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from bridge.app import create_app
from bridge.doubles.demo import create_demo_app
from bridge.sessions.manager import SessionManager
from support.app import site_cookie
from support.browser import (
    ARTIFACTS,
    COMPONENT,
    NEEDS_CHROMIUM,
    TOKEN_TTL,
    WAIT_MS,
    Witness,
    component_is,
    fake_of,
    sign_in,
    wait_ready,
)
from support.config import make_settings
from support.live import LiveServer, free_port
from support.redis import RedisServer

pytestmark = [pytest.mark.integration, NEEDS_CHROMIUM]

AGENTS = {
    "Chrome on macOS": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36"
    ),
    "Safari on iPhone": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
    ),
    "Firefox on Windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
    ),
}
BRIDGE_COOKIE = "sentifyd_bridge"


async def open_contexts(browser: Browser) -> list[BrowserContext]:
    contexts = []
    for agent in AGENTS.values():
        ctx = await browser.new_context(viewport={"width": 1100, "height": 760}, user_agent=agent)
        ctx.set_default_timeout(WAIT_MS)
        contexts.append(ctx)
    return contexts


async def refreshed(page: Page) -> None:
    """Ask the component for fresh tokens now and wait until it has them."""
    count = int(await page.get_attribute(COMPONENT, "data-refresh-count") or 0)
    await page.evaluate(f"() => document.querySelector({COMPONENT!r}).refreshNow()")
    await page.wait_for_function(
        component_is(f"Number(el.dataset.refreshCount) > {count} && el.dataset.status === 'ready'")
    )


async def refused(page: Page) -> dict[str, Any]:
    """Ask the component for fresh tokens now; return the token endpoint's refusal."""
    async with page.expect_response(lambda r: "/request_tokens" in r.url) as answer:
        await page.evaluate(f"() => document.querySelector({COMPONENT!r}).refreshNow()")
    response = await answer.value
    assert response.status == 401, response.status
    await page.wait_for_function(component_is("el.dataset.status === 'error'"))
    body: dict[str, Any] = await response.json()
    return body


async def session_ids(contexts: list[BrowserContext]) -> list[str]:
    ids = []
    for ctx in contexts:
        cookies = {c["name"]: c["value"] for c in await ctx.cookies()}
        ids.append(SessionManager.session_id(cookies[BRIDGE_COOKIE]))
    return ids


async def sign_out_others(
    page: Page, devices_url: str, expected: int, screenshot: str | None = None
) -> str:
    """On "My devices", check the listing, sign the other devices out; return the page's text."""
    await page.wait_for_url(devices_url)
    listed = page.locator(".device")
    assert await listed.count() == 3
    current = page.locator(".device.is-current")
    assert await current.count() == 1
    assert "Chrome on macOS" in await current.inner_text()
    assert "This device" in await current.inner_text()
    names = await page.locator(".device-name").all_inner_texts()
    assert sorted(n.replace("This device", "").strip() for n in names) == sorted(AGENTS)
    if screenshot:  # the README's picture (docs/my-devices.png) is the demo's
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    await page.get_by_role("button", name="Sign out all other devices").click()
    await page.get_by_text(f"Signed out {expected} devices.").wait_for()
    assert await page.locator(".device").count() == 1
    return await page.content()


# --- one instance: the demo ---------------------------------------------------------------------


@pytest.fixture
def demo() -> Iterator[LiveServer]:
    port = free_port()
    server = LiveServer(create_demo_app(port=port, token_ttl=TOKEN_TTL * 10), port=port).start()
    yield server
    server.stop()


async def test_demo_sign_out_all_other_devices(demo: LiveServer, browser: Browser) -> None:
    contexts = await open_contexts(browser)
    witnesses = [Witness(demo, ctx) for ctx in contexts]
    pages = []
    for witness, ctx in zip(witnesses, contexts, strict=True):
        page = witness.watch(await ctx.new_page())
        await sign_in(page, demo, "alice")
        await wait_ready(page)
        pages.append(page)
    ids = await session_ids(contexts)
    assert len(set(ids)) == 3
    mac, phone, windows = pages

    # The shop links to "My devices"; it opens in a second tab, the avatar stays in the first.
    devices = witnesses[0].watch(await contexts[0].new_page())
    await devices.goto(demo.url + "/")
    await devices.get_by_role("link", name="My devices").click()
    html = await sign_out_others(devices, demo.url + "/account/sessions", 2, "my-devices.png")
    await devices.screenshot(path=str(ARTIFACTS / "my-devices-signed-out.png"), full_page=True)
    for session_id in ids:
        assert session_id not in html and session_id[:16] not in html

    for other in (phone, windows):
        assert (await refused(other))["error"] == "invalid_refresh_token"
    await refreshed(mac)  # the page's own session keeps working
    for witness, ctx_pages in zip(witnesses, ([mac, devices], [phone], [windows]), strict=True):
        await witness.check(*ctx_pages)
    for ctx in contexts:
        await ctx.close()


# --- two instances sharing Redis ----------------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def instance(redis: RedisServer, backend: str) -> LiveServer:
    """A bridge on its own port and origin, on the shared Redis, with the demo's component."""
    port = free_port()
    settings = make_settings(
        {
            "server": {"public_url": f"http://127.0.0.1:{port}"},
            "store": {"url": redis.url, "prefix": "devices"},
            "sentifyd": {"backend": backend},
            "component": {"script": "/static/demo/sentifyd-bot.js"},
        }
    )
    return LiveServer(create_app(settings), port=port).start()


async def test_sign_out_all_other_devices_across_two_instances(
    redis: RedisServer, live_fake: LiveServer, browser: Browser
) -> None:
    a, b = instance(redis, live_fake.url), instance(redis, live_fake.url)
    try:
        contexts = await open_contexts(browser)
        fake = fake_of(live_fake)
        # Her Mac uses instance A; her phone and her Windows PC are answered by instance B.
        servers = [a, b, b]
        witnesses = [Witness(s, c, fake=fake) for s, c in zip(servers, contexts, strict=True)]
        pages = []
        for server, witness, ctx in zip(servers, witnesses, contexts, strict=True):
            cookie = site_cookie(server.app, "alice")
            await ctx.add_cookies([{"name": "session", "value": cookie, "url": server.url}])
            page = witness.watch(await ctx.new_page())
            await page.goto(server.url + "/")
            await wait_ready(page)
            pages.append(page)
        mac, phone, windows = pages

        devices = witnesses[0].watch(await contexts[0].new_page())
        await devices.goto(a.url + "/account/sessions")
        await sign_out_others(devices, a.url + "/account/sessions", 2)

        for other in (phone, windows):
            answer = await refused(other)
            assert answer["error"] == "invalid_refresh_token", json.dumps(answer)
        await refreshed(mac)
        for witness, ctx_pages in zip(witnesses, ([mac, devices], [phone], [windows]), strict=True):
            await witness.check(*ctx_pages)
        for ctx in contexts:
            await ctx.close()
    finally:
        a.stop()
        b.stop()
