"""The operator console in a real browser (Debian's Chromium through Playwright), against a
bridge served on 127.0.0.1 with a live stand-in Sentifyd: an operator signs in, finds a
customer, reads their token timeline, revokes a session (the customer's next refresh gets
401) and finds it in the audit trail under their name. At every step nothing a page's script
can read, and no answer, holds an admin token, a handle, a cookie or a Sentifyd token.

The customer's history is made by real token requests over a day, on a clock the test moves
(the bridge's injected clock), so that the timeline has something to show. The screenshot the
README shows is taken here: into ``test-artifacts/console.png`` on every run, and into
``docs/console.png`` with ``UPDATE_DOCS_SCREENSHOTS=1``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page

from bridge.app import create_app
from support import leaks as support_leaks
from support.app import Clock, site_cookie
from support.browser import ARTIFACTS, CHROMIUM, READABLE_JS, WAIT_MS, chromium
from support.config import make_settings
from support.live import LiveServer, free_port

DANA = "dana-console-browser-token-0123456789abcdefg"
SAM = "sam-console-browser-token-0123456789abcdefghi"
for _token in (DANA, SAM):
    support_leaks.always(_token)
CUSTOMER = "customer-42"
DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = [pytest.mark.integration]


class History:
    """A customer's devices, each asking the bridge for tokens at moments the test picks."""

    def __init__(self, server: LiveServer, app: Any, clock: Clock) -> None:
        self.server, self.app, self.clock = server, app, clock
        self.handles: dict[str, str] = {}
        self.cookies: dict[str, httpx.Cookies] = {}

    def at(self, moment: float) -> History:
        self.clock.now = moment
        return self

    def _client(self, device: str, **claims: Any) -> httpx.Client:
        cookies = self.cookies.setdefault(device, httpx.Cookies())
        # The site's login cookie, signed now (on the bridge's clock): it lasts an hour.
        cookies.set("session", site_cookie(self.app, CUSTOMER, **claims))
        return httpx.Client(base_url=self.server.url, cookies=cookies)

    def first(self, device: str, path: str = "/request_tokens", **claims: Any) -> int:
        with self._client(device, **claims) as client:
            response = client.get(path)
            self.cookies[device].update(client.cookies)
        if response.status_code == 200:
            self.handles[device] = response.json()["tokens"]["refreshToken"]
        return response.status_code

    def refresh(self, device: str, handle: str | None = None) -> int:
        with self._client(device) as client:
            sent = handle or self.handles[device]
            response = client.get("/request_tokens", params={"refreshToken": sent})
            self.cookies[device].update(client.cookies)
        if response.status_code == 200 and handle is None:
            self.handles[device] = response.json()["tokens"]["refreshToken"]
        return response.status_code


@pytest.fixture
def bridge(live_fake: LiveServer) -> Iterator[tuple[LiveServer, Any]]:
    port = free_port()  # the public URL names it: the browser's Origin must match
    settings = make_settings(
        {
            "server": {"public_url": f"http://127.0.0.1:{port}"},
            "sentifyd": {"backend": live_fake.url},
            "session": {"refresh_grace": 5},
        },
        env={"BRIDGE_ADMIN_TOKENS": f"dana:{DANA},sam:{SAM}"},
    )
    clock = Clock(time.time() - 20 * 3600)
    application = create_app(settings, clock=clock)
    server = LiveServer(application, port=port).start()
    yield server, (application, clock)
    server.stop()


def make_history(server: LiveServer, app: Any, clock: Clock) -> History:
    now = time.time()
    h = History(server, app, clock)
    assert h.at(now - 20 * 3600).first("laptop") == 200
    for minutes in (2, 4, 6):  # each past the stand-in's 60 s tokens: a Sentifyd refresh
        assert h.at(now - 20 * 3600 + minutes * 60).refresh("laptop") == 200
    assert h.at(now - 14 * 3600).first("phone") == 200
    stolen = h.handles["phone"]
    assert h.at(now - 14 * 3600 + 90).refresh("phone") == 200
    assert h.at(now - 14 * 3600 + 180).refresh("phone", stolen) == 401  # replayed: theft
    assert h.at(now - 9 * 3600).first("phone", "/request_tokens/premium") == 403  # not a customer
    assert h.at(now - 25 * 60).first("laptop") == 200  # idle for hours: ended, a new session
    assert h.at(now - 50 * 60).first("tablet") == 200
    for minutes in (40, 30, 20, 12, 6):
        assert h.at(now - minutes * 60).refresh("tablet") == 200
    assert h.at(now - 8 * 60).refresh("laptop") == 200
    h.at(time.time())
    return h


@pytest.fixture
async def console_context() -> AsyncIterator[BrowserContext]:
    async with chromium() as launched:
        ctx = await launched.new_context(viewport={"width": 1280, "height": 900})
        ctx.set_default_timeout(WAIT_MS)
        yield ctx
        await ctx.close()


async def readable(page: Page) -> str:
    text: str = await page.evaluate(READABLE_JS)
    assert text.startswith("<html")
    return text


async def no_secret_readable(page: Page, context: BrowserContext, secrets: list[str]) -> None:
    cookies = await context.cookies()
    console = [c for c in cookies if c["name"].endswith("sentifyd_bridge_console")]
    assert console and all(c["httpOnly"] and c["sameSite"] == "Strict" for c in console)
    text = await readable(page)
    assert "sentifyd_bridge_console" not in text.split("cookie:", 1)[1]
    for secret in [*secrets, *(c["value"] for c in cookies)]:
        assert secret not in text


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
async def test_an_operator_reads_a_timeline_revokes_a_session_and_is_audited(
    bridge: tuple[LiveServer, Any], console_context: BrowserContext, live_fake: LiveServer
) -> None:
    context = console_context
    server, (application, clock) = bridge
    history = await asyncio.to_thread(make_history, server, application, clock)
    fake = live_fake.app.extensions["fake_sentifyd"]
    seen: list[str] = []
    page = await context.new_page()
    page.on("response", lambda r: seen.append(r.url))

    def secrets() -> list[str]:
        return [DANA, SAM, *history.handles.values(), *fake.issued_refresh_tokens,
                *fake.issued_access_tokens]  # fmt: skip

    # Sign in: the token goes in a form once, never into a URL.
    await page.goto(server.url + "/admin/")
    await page.get_by_label("Admin token").fill(DANA)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(server.url + "/admin/")
    await page.get_by_text("Signed in as").wait_for()
    assert "dana" in await page.locator(".operator-chip").inner_text()
    await no_secret_readable(page, context, secrets())

    # Find the customer: the last day by default.
    await page.get_by_label("Find a user").fill(CUSTOMER)
    await page.get_by_role("button", name="Show").click()
    await page.get_by_role("heading", name=CUSTOMER, exact=True).wait_for()
    bearer = {"Authorization": f"Bearer {SAM}"}
    async with httpx.AsyncClient(base_url=server.url, headers=bearer) as api:
        shown = (await api.get(f"/admin/users/{CUSTOMER}", params={"events": 200})).json()
    now = time.time()
    day = [e for e in shown["events"] if e["time"] >= now - 86400]
    kinds = {e["event"] for e in day}
    assert kinds == {
        "session_started", "tokens_issued", "tokens_refreshed", "refresh_handle_reused",
        "access_denied", "session_ended",
    }  # fmt: skip
    assert {e["reason"] for e in day if e["event"] == "session_ended"} >= {"handle_reuse"}
    marks = page.locator("svg.timeline g.mark")
    assert await marks.count() == len(day)
    for kind in kinds:
        expected = sum(e["event"] == kind for e in day)
        assert await page.locator(f"svg.timeline g.mark-{kind}").count() == expected, kind
    reuse = page.locator("svg.timeline g.mark-refresh_handle_reused title")
    assert "refresh handle reused" in await reuse.first.text_content()  # type: ignore[operator]
    assert len(shown["sessions"]) == 2  # the laptop's second session and the tablet
    await no_secret_readable(page, context, secrets())

    # The last hour: the tablet's and the laptop's new session only.
    await page.get_by_role("link", name="Last hour").click()
    await page.wait_for_url("**window=hour")
    hour = [e for e in shown["events"] if e["time"] >= now - 3600]
    assert await marks.count() == len(hour) < len(day)

    # Revoke the tablet's session.
    tablet = min(shown["sessions"], key=lambda s: s["created_at"])  # 50 min old; laptop 25
    await page.get_by_role("button", name=f"Revoke session {tablet['id'][:8]}").click()
    await page.wait_for_url("**window=hour")
    await page.locator("svg.timeline g.mark-session_ended.reason-admin_revoked").wait_for()
    assert await page.locator(f"tr[data-session='{tablet['id'][:8]}']").count() == 0
    assert await asyncio.to_thread(history.refresh, "tablet") == 401
    await no_secret_readable(page, context, secrets())

    # The README's picture: the day, the revocation in it, the operator named.
    await page.get_by_role("link", name="Last day").click()
    await page.wait_for_url("**window=day")
    assert await marks.count() == len(day) + 1
    assert "dana (console)" in await page.locator("table.events").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):  # the README's copy, refreshed on demand
        await page.screenshot(path=str(DOCS / "console.png"), full_page=True)

    # The audit trail names the operator.
    await page.get_by_role("link", name="Audit trail").click()
    row = page.locator("table.audit tbody tr", has_text="revoke_session").first
    await row.wait_for()
    assert "dana" in await row.inner_text() and CUSTOMER in await row.inner_text()
    await no_secret_readable(page, context, secrets())
    async with httpx.AsyncClient(base_url=server.url, headers=bearer) as api:
        entries = (await api.get("/admin/audit", params={"actor": "dana"})).json()["entries"]
    actions = [e["action"] for e in entries]
    assert actions[:5] == ["read_audit", "show_user", "show_user", "revoke_session", "show_user"]
    revoked = entries[3]
    assert revoked["session"] == tablet["id"] and revoked["outcome"] == "ok"
    assert revoked["user"] == CUSTOMER and "console_sign_in" in actions

    # Sign out: the console is closed to this browser again.
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_label("Admin token").wait_for()
    await page.goto(server.url + f"/admin/console/user?user={CUSTOMER}")
    assert page.url == server.url + "/admin/"
    assert not [url for url in seen if DANA in url or SAM in url]
