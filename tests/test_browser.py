"""The demo, and single sign-on with a real OpenID provider, in a real browser (Debian's
Chromium, driven by Playwright): sign in, tokens, a refresh with the handle, sign out; and at
every step, nothing the page's JavaScript can read holds the Sentifyd API key, a Sentifyd
refresh token, the OIDC client secret or a login cookie.

Chromium comes from apt (``scripts/test.sh`` installs it), never from ``playwright install``.
Without ``/usr/bin/chromium`` these tests skip, except in CI (``CI`` set), where they must run.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, BrowserContext, Response

from bridge.app import create_app
from bridge.doubles.demo import create_demo_app
from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from support.browser import (
    ARTIFACTS,
    COMPONENT,
    NEEDS_CHROMIUM,
    SITE_COOKIE,
    TOKEN_TTL,
    WAIT_MS,
    Witness,
    component_is,
    fake_of,
    sign_in,
    stored,
    wait_ready,
)
from support.config import API_KEY, AVATAR_ID, PREMIUM_API_KEY, PREMIUM_ID
from support.live import LiveServer, free_port
from support.oidc import OP_CLIENT_SECRET, RealProvider

pytestmark = [pytest.mark.integration, NEEDS_CHROMIUM]

# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def demo() -> Iterator[LiveServer]:
    """The embedded demo (site login, bridge, stand-in Sentifyd) under uvicorn on loopback."""
    port = free_port()
    server = LiveServer(create_demo_app(port=port, token_ttl=TOKEN_TTL), port=port).start()
    yield server
    server.stop()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(WAIT_MS)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
def witness(demo: LiveServer, context: BrowserContext) -> Witness:
    return Witness(demo, context)


# --- the demo --------------------------------------------------------------------------------


async def test_demo_sign_in_tokens_refresh_and_sign_out(
    demo: LiveServer, context: BrowserContext, witness: Witness
) -> None:
    fake = fake_of(demo)
    page = witness.watch(await context.new_page())
    token_answers: list[Response] = []
    page.on("response", lambda r: token_answers.append(r) if "/request_tokens" in r.url else None)

    # Signed in as a customer, the avatar page loads and the component gets its tokens.
    landed = await sign_in(page, demo, "alice")
    assert landed is not None and landed.status == 200
    await wait_ready(page)
    await witness.check(page)
    first = await stored(page)
    assert first["tokens"]["accessToken"] in fake.issued_access_tokens
    first_handle = first["tokens"]["refreshToken"]
    assert first_handle and first_handle not in fake.issued_refresh_tokens
    assert fake.issued_refresh_tokens  # ...though Sentifyd did issue one, held by the bridge
    assert await page.get_attribute(COMPONENT, "data-error") == ""

    # The access token runs out; the component refreshes with its handle, and gets a new
    # access token and a new handle.
    await page.wait_for_function(
        component_is(
            "Number(el.dataset.refreshCount) >= 1 && el.dataset.status === 'ready' && "
            "JSON.parse(sessionStorage.getItem(el.storageKey)).tokens.accessToken !== "
            f"{json.dumps(first['tokens']['accessToken'])}"
        ),
        timeout=(3 * TOKEN_TTL) * 1000,
    )
    refreshed = await stored(page)
    assert refreshed["tokens"]["refreshToken"] not in (first_handle, "")
    assert refreshed["tokens"]["refreshToken"] not in fake.issued_refresh_tokens
    assert refreshed["tokens"]["accessToken"] in fake.issued_access_tokens
    assert fake.refresh_calls >= 1  # the bridge used Sentifyd's refresh token, server-side
    await witness.check(page)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "avatar-page.png"), full_page=True)

    # A second tab signs out of the site; the first tab's component is refused on its next
    # request and says so.
    other = witness.watch(await context.new_page())
    await other.goto(demo.url + "/")
    await wait_ready(other)
    await other.get_by_role("button", name="Sign out").click()
    await other.wait_for_url(demo.url + "/demo/login")
    await witness.check(page, other)

    # Ask now rather than wait for the next automatic refresh; either way (refreshNow is a
    # no-op while an exchange is under way) the next answer must be the refusal.
    await page.evaluate(f"() => document.querySelector({COMPONENT!r}).refreshNow()")
    await page.wait_for_function(
        component_is("el.dataset.status === 'error' && el.dataset.error === 'login_required'"),
        timeout=WAIT_MS + TOKEN_TTL * 1000,
    )
    refused = token_answers[-1]
    assert refused.status == 401
    assert (await refused.json())["error"] == "login_required"
    shown = page.locator(f"{COMPONENT} #error")
    assert await shown.is_visible()
    assert "HTTP 401" in await shown.inner_text()
    assert "login_required" in await shown.inner_text()
    sign_in_again = page.locator(f"{COMPONENT} #signin")
    assert await sign_in_again.get_attribute("href") == demo.url + "/demo/login?next=/"
    await witness.check(page, other)
    await page.screenshot(path=str(ARTIFACTS / "avatar-page-signed-out.png"))

    # The page itself now sends the visitor to the login.
    await page.reload()
    assert page.url == demo.url + "/demo/login?next=/"
    await witness.check(page, other)


async def test_demo_refuses_a_signed_in_non_customer(
    demo: LiveServer, context: BrowserContext, witness: Witness
) -> None:
    page = witness.watch(await context.new_page())
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    landed = await sign_in(page, demo, "bob")
    assert landed is not None and landed.status == 403
    await page.get_by_role("heading", name="Not available for your account").wait_for()
    assert await page.locator(COMPONENT).count() == 0
    assert not [url for url in requests if "/request_tokens" in url]
    assert requests  # the listener saw the page's own requests
    await witness.check(page)

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(demo.url + "/demo/login")
    assert SITE_COOKIE not in {c["name"] for c in await context.cookies()}
    await witness.check(page)


async def test_witness_sees_a_planted_secret(
    demo: LiveServer, context: BrowserContext, witness: Witness
) -> None:
    """The leak check can fail: a refresh token written where scripts can read it is caught."""
    page = witness.watch(await context.new_page())
    await sign_in(page, demo, "alice")
    await wait_ready(page)
    await witness.check(page)
    leaked = fake_of(demo).issued_refresh_tokens[-1]
    await page.evaluate("(t) => window.localStorage.setItem('oops', t)", leaked)
    with pytest.raises(AssertionError):
        await witness.check(page)


# --- single sign-on --------------------------------------------------------------------------


@pytest.fixture(params=["uvicorn", "hypercorn"])
def sso(
    real_op: RealProvider, request: pytest.FixtureRequest
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """The bridge with SSO as its only way in, on the port the provider knows, with the demo's
    stand-in component and a live stand-in Sentifyd whose tokens last TOKEN_TTL seconds; under
    uvicorn (serve's default) and once under hypercorn."""
    fake = LiveServer(
        create_fake_sentifyd(
            {API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID}, token_ttl=TOKEN_TTL
        ),
        server="hypercorn",
    ).start()
    settings = real_op.bridge_settings(
        fake.url, component={"script": "/static/demo/sentifyd-bot.js"}
    )
    bridge = LiveServer(
        create_app(settings), port=real_op.bridge_port, server=request.param
    ).start()
    yield bridge, fake
    bridge.stop()
    fake.stop()


async def test_sso_sign_in_tokens_refresh_and_logout(
    sso: tuple[LiveServer, LiveServer], real_op: RealProvider, context: BrowserContext
) -> None:
    bridge, fake_server = sso
    fake = fake_of(fake_server)
    witness = Witness(bridge, context, fake=fake, extra_secrets=[OP_CLIENT_SECRET])
    page = witness.watch(await context.new_page())

    # The avatar page sends a signed-out visitor through the provider's own login pages.
    await page.goto(bridge.url + "/avatars/premium")
    assert page.url.startswith(real_op.issuer)
    await page.fill("input[name=login]", "alice")
    await page.fill("input[name=password]", "any")
    await page.get_by_role("button", name="Sign-in").click()
    await page.get_by_role("button", name="Continue").click()  # the provider's consent page
    await page.wait_for_url(bridge.url + "/avatars/premium")
    await wait_ready(page)
    await witness.check(page)
    first = await stored(page)
    assert first["tokens"]["accessToken"] in fake.issued_access_tokens
    assert first["tokens"]["refreshToken"] not in fake.issued_refresh_tokens

    await page.wait_for_function(
        component_is(
            "Number(el.dataset.refreshCount) >= 1 && el.dataset.status === 'ready' && "
            "JSON.parse(sessionStorage.getItem(el.storageKey)).tokens.accessToken !== "
            f"{json.dumps(first['tokens']['accessToken'])}"
        ),
        timeout=(3 * TOKEN_TTL) * 1000,
    )
    assert (await stored(page))["tokens"]["refreshToken"] != first["tokens"]["refreshToken"]
    await witness.check(page)
    await page.screenshot(path=str(ARTIFACTS / "avatar-page-sso.png"), full_page=True)

    # Logout in a second tab ends the bridge session, then the provider's.
    other = witness.watch(await context.new_page())
    await other.goto(bridge.url + "/avatars/premium")
    await wait_ready(other)
    await other.get_by_role("button", name="Sign out").click()
    await other.wait_for_url(re.compile(re.escape(real_op.issuer) + "/session/end.*"))
    # The redirect above is what the avatar page's CSP form-action must allow.
    await other.get_by_role("button", name="Yes, sign me out").click()
    # Back at the bridge, which finds no session and sends the visitor to sign in again.
    await other.locator("input[name=login]").wait_for()
    assert other.url.startswith(real_op.issuer)
    await witness.check(page, other)

    await page.evaluate(f"() => document.querySelector({COMPONENT!r}).refreshNow()")
    await page.wait_for_function(
        component_is("el.dataset.status === 'error' && el.dataset.error === 'login_required'"),
        timeout=WAIT_MS + TOKEN_TTL * 1000,
    )
    await witness.check(page, other)
    # Signed out at the provider too: the avatar page asks for credentials again.
    await page.reload()
    assert page.url.startswith(real_op.issuer)
    assert await page.locator("input[name=login]").count() == 1
