"""Same origin only, on every endpoint that acts: ``Sec-Fetch-Site: same-site`` (a sibling
subdomain) is refused like ``cross-site``, before anything changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from quart import Quart

from bridge.app import create_app
from bridge.doubles.demo import create_demo_app
from bridge.settings.loader import _deep_merge, load_settings
from bridge.wiring import Bridge
from support.app import login
from support.config import PUBLIC_URL, TEST_ENV, base_config
from support.oidc import ControlledProvider, sign_in
from support.traffic import ADMIN_TOKEN

SIBLING = "http://blog.127.0.0.1.nip.example"  # another origin of the same site, say
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def app(op: ControlledProvider, clock: Any, fake: Quart) -> AsyncIterator[Quart]:
    data = _deep_merge(base_config(), {"server": {"public_url": PUBLIC_URL}})
    data["login"]["oidc"] = {
        "issuer": op.issuer,
        "client_id": op.client_id,
        "client_secret_env": "OIDC_CLIENT_SECRET",
    }
    env = {**TEST_ENV, "OIDC_CLIENT_SECRET": "x" * 40, "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}
    application = create_app(
        load_settings(None, env, overrides=data),
        oidc_transport=op.transport(),
        sentifyd_transport=httpx.ASGITransport(app=fake),
        clock=clock,
    )
    async with application.test_app():
        yield application


def stored(app: Quart) -> dict[str, Any]:
    return Bridge.of(app).store.snapshot()  # type: ignore[attr-defined, no-any-return]


ACTING = [
    ("GET", "/request_tokens"),
    ("POST", "/request_tokens"),
    ("GET", "/request_tokens/premium"),
    ("POST", "/logout"),
    ("POST", "/backchannel-logout"),
    ("GET", "/session"),
    ("GET", "/admin/users/alice-sub"),
    ("DELETE", "/admin/users/alice-sub/sessions"),
    ("DELETE", "/admin/users/alice-sub/block"),
    ("GET", "/admin/sessions"),
]


@pytest.mark.parametrize(("method", "path"), ACTING)
@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": SIBLING},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": SIBLING},  # an older browser: no Sec-Fetch-Site, another Origin
    ],
)
async def test_other_origins_are_refused_everywhere_that_acts(
    app: Quart, op: ControlledProvider, method: str, path: str, headers: dict[str, str]
) -> None:
    browser = app.test_client()
    await sign_in(browser, op)
    login(browser, app, "bob")  # a site login as well
    before = stored(app)
    response = await browser.open(
        path, method=method, headers={**headers, **ADMIN}, form={"csrf_token": "x"}
    )
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "cross_site_request"
    assert stored(app) == before


@pytest.mark.parametrize("site", ["same-origin", "none", None])
async def test_own_origin_requests_pass(app: Quart, op: ControlledProvider, site: Any) -> None:
    browser = app.test_client()
    await sign_in(browser, op)
    headers = {"Sec-Fetch-Site": site} if site else {}
    assert (await browser.get("/request_tokens", headers=headers)).status_code == 200
    own = {**headers, "Origin": PUBLIC_URL}
    assert (await browser.get("/request_tokens", headers=own)).status_code == 200
    admin = await browser.get("/admin/users/alice-sub", headers={**headers, **ADMIN})
    assert admin.status_code == 200


async def test_a_provider_server_may_post_back_channel_logouts(
    app: Quart, op: ControlledProvider
) -> None:
    browser = app.test_client()
    await sign_in(browser, op)
    token = op.sign(op.logout_claims())
    ended = await app.test_client().post("/backchannel-logout", form={"logout_token": token})
    assert ended.status_code == 200 and (await ended.get_json())["sessions_ended"] == 1


@pytest.mark.parametrize("path", ["/demo/login", "/demo/logout"])
async def test_the_demo_sites_forms_refuse_same_site_posts(path: str) -> None:
    demo = create_demo_app(port=8000)
    async with demo.test_app():
        response = await demo.test_client().post(path, headers={"Sec-Fetch-Site": "same-site"})
        assert response.status_code == 403


@pytest.mark.parametrize(
    "origin",
    [
        f"{PUBLIC_URL}.evil.example",  # the public origin as a prefix of another host
        f"{PUBLIC_URL}0",  # another port that starts with ours
        "http://127.0.0.1",  # the same host on another port
        PUBLIC_URL.replace("http://", "https://"),  # another scheme
        "http://evil.example?" + PUBLIC_URL,
        "null",  # a sandboxed frame or a file: page
    ],
)
@pytest.mark.parametrize("site", [None, "same-origin"])
async def test_an_origin_that_only_resembles_ours_is_refused(
    app: Quart, op: ControlledProvider, origin: str, site: str | None
) -> None:
    browser = app.test_client()
    await sign_in(browser, op)
    before = stored(app)
    headers = {"Origin": origin, **({"Sec-Fetch-Site": site} if site else {})}
    response = await browser.get("/request_tokens", headers=headers)
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "cross_site_request"
    assert stored(app) == before
