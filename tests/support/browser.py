"""What the browser tests share (tests/test_browser.py, test_account_browser.py,
test_console_browser.py): Debian's Chromium through Playwright, the component's selectors, the
``Witness`` that checks everything a page's JavaScript can read for secrets, and the demo's
sign-in steps."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Response, async_playwright
from playwright.async_api import Error as PlaywrightError

from bridge.wiring import Bridge
from support.live import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN_TTL = 6  # seconds: short, so that the component refreshes within the test
WAIT_MS = 10_000  # for anything that does not wait on the token's expiry
COMPONENT = "sentifyd-bot"
BRIDGE_COOKIE = "sentifyd_bridge"
SITE_COOKIE = "shop_session"

# Without /usr/bin/chromium the browser tests skip, except in CI (``CI`` set), where they must run.
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs /usr/bin/chromium (apt install chromium; scripts/test.sh does)",
)

# Everything a script on the page can read: the document (with the component's open shadow
# root), both storages and the cookies that are not HttpOnly.
READABLE_JS = """() => {
  const parts = [document.documentElement.outerHTML, "cookie:" + document.cookie];
  for (const el of document.querySelectorAll("*")) {
    if (el.shadowRoot) parts.push(el.shadowRoot.innerHTML, el.shadowRoot.textContent);
  }
  for (const store of [window.sessionStorage, window.localStorage]) {
    for (let i = 0; i < store.length; i++) {
      const key = store.key(i);
      parts.push(key, store.getItem(key));
    }
  }
  return parts.join("\\n");
}"""


def component_is(condition: str) -> str:
    """A predicate over the component element ``el`` for ``page.wait_for_function``."""
    find = f"document.querySelector({COMPONENT!r})"
    return f"() => {{ const el = {find}; return !!el && ({condition}); }}"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium (``/usr/bin/chromium``), launched through Playwright and closed after."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


def fake_of(server: LiveServer) -> Any:
    return server.app.extensions["fake_sentifyd"]


class Witness:
    """Collect what the page's JavaScript can read, and check it for secrets at every step.

    Network responses are read as they arrive (a body may be gone after the page navigates).
    Their ``Set-Cookie`` headers are left out: a script never sees them, and they legitimately
    carry the HttpOnly cookies.
    """

    def __init__(
        self,
        server: LiveServer,
        context: BrowserContext,
        *,
        fake: Any = None,
        extra_secrets: Sequence[str] = (),
    ) -> None:
        self.server = server
        self.context = context
        self.fake = fake if fake is not None else fake_of(server)  # the demo's in-process one
        self.extra_secrets = list(extra_secrets)
        self.responses: list[str] = []
        self._pending: list[asyncio.Future[None]] = []

    def watch(self, page: Page) -> Page:
        page.on("response", self._on_response)
        return page

    def _on_response(self, response: Response) -> None:
        self._pending.append(asyncio.ensure_future(self._read(response)))

    async def _read(self, response: Response) -> None:
        headers = await response.all_headers()
        self.responses.extend(f"{k}: {v}" for k, v in headers.items() if k != "set-cookie")
        if 300 <= response.status < 400:
            return  # redirects have no body to read
        try:
            body = await response.body()
        except PlaywrightError:
            # The page navigated away before the body could be fetched: the page never had it
            # either, but record that we could not look.
            self.responses.append(f"<unread body of {response.url}>")
            return
        self.responses.append(body.decode("utf-8", "replace"))

    def secrets(self) -> list[str]:
        """The avatars' API keys, every refresh token Sentifyd has issued so far, and any
        further secret the test names."""
        bridge = Bridge.of(self.server.app)
        return [
            *(avatar.api_key.reveal() for avatar in bridge.settings.avatars),
            *list(self.fake.issued_refresh_tokens),
            *self.extra_secrets,
        ]

    async def check(self, *pages: Page) -> None:
        """Assert that no page, storage, script-readable cookie or response holds a secret."""
        await asyncio.gather(*self._pending)
        self._pending.clear()
        cookies = {c["name"]: c for c in await self.context.cookies()}
        for name in (BRIDGE_COOKIE, SITE_COOKIE):
            if name in cookies:
                assert cookies[name]["httpOnly"], name
        cookie_values = [cookies[n]["value"] for n in (BRIDGE_COOKIE, SITE_COOKIE) if n in cookies]
        secrets = self.secrets()
        assert secrets, "nothing to look for"
        network = "\n".join(self.responses)
        for secret in secrets:
            assert secret not in network
        for page in pages:
            if page.is_closed():
                continue
            readable = await page.evaluate(READABLE_JS)
            assert readable.startswith("<html")  # we read the document at all
            for secret in [*secrets, *cookie_values]:
                assert secret not in readable
            script_cookies = readable.split("cookie:", 1)[1].split("\n", 1)[0]
            assert BRIDGE_COOKIE not in script_cookies and SITE_COOKIE not in script_cookies


async def sign_in(page: Page, server: LiveServer, user: str) -> Response | None:
    """Open the site, get sent to its login, pick ``user``, submit; return the final answer."""
    await page.goto(server.url + "/")
    assert page.url == server.url + "/demo/login?next=/"
    await page.locator(f"label:has(input[name=username][value={user}])").click()  # its card
    assert await page.is_checked(f"input[name=username][value={user}]")
    async with page.expect_response(
        lambda r: r.url == server.url + "/" and r.request.method == "GET"
    ) as landed:
        await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(server.url + "/")
    return await landed.value


async def stored(page: Page) -> dict[str, Any]:
    """What the component kept in sessionStorage."""
    key = await page.evaluate(f"() => document.querySelector({COMPONENT!r}).storageKey")
    raw = await page.evaluate("(k) => window.sessionStorage.getItem(k)", key)
    assert raw, "the component stored nothing"
    value: dict[str, Any] = json.loads(raw)
    return value


async def wait_ready(page: Page) -> None:
    await page.wait_for_function(component_is("el.dataset.status === 'ready'"), timeout=WAIT_MS)
