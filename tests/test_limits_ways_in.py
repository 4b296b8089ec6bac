"""Every way in pays the same per-user limits: ``new_sessions_per_user`` and ``sessions_per_user``
hold for the site's cookie, a JWT (cookie or Bearer), the site's "who am I" URL and SSO alike,
because they are enforced where a session is created (:meth:`SessionManager.create`).

Each way in is driven for real: the JWKS and the "who am I" URL are HTTP servers on 127.0.0.1,
and SSO signs in through the real OpenID provider (node-oidc-provider)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from quart import Quart, request
from quart.typing import TestClientProtocol as Client

from bridge.settings.loader import _deep_merge, load_settings
from bridge.settings.schema import Settings
from bridge.wiring import Bridge
from support.app import Clock, bridge_of, site_cookie
from support.config import TEST_ENV, base_config
from support.live import LiveServer
from support.oidc import (
    Browser,
    ControlledProvider,
    RealProvider,
    callback,
    make_sso_app,
    sign_in,
    start,
)
from support.oidc import records as sso_records
from support.redis import RedisServer, redis_server  # noqa: F401 - fixture

TWO_A_MINUTE = {"new_sessions_per_user": "2/minute"}
ISSUER = "https://tenant.example-idp.com/"
AUDIENCE = "https://shop.example.com/api"


# --- the ways in --------------------------------------------------------------------------------


@dataclass
class Way:
    """A way in: its settings, the subject it signs in as, and how a new browser signs in to
    the site (cookies set on the client; the headers each of its requests carries)."""

    name: str
    login: dict[str, Any]
    subject: str
    sign_in: Callable[[Quart, Client], dict[str, str]]

    def settings(self, limits: dict[str, Any]) -> Settings:
        data = _deep_merge(base_config(), {"limits": limits})
        data["login"] = self.login
        return load_settings(None, TEST_ENV, overrides=data)


def site_cookie_way() -> Way:
    def sign_in(app: Quart, client: Client) -> dict[str, str]:
        client.set_cookie("localhost", "session", site_cookie(app, "alice"))
        return {}

    return Way("site_cookie", base_config()["login"], "alice", sign_in)


def jwks_server() -> tuple[LiveServer, RSAKey]:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
    app = Quart("jwks")
    public = {"keys": [key.as_dict(private=False)]}

    @app.get("/.well-known/jwks.json")
    async def serve() -> Any:
        return public

    return LiveServer(app).start(), key


def jwt_way(server: LiveServer, key: RSAKey, *, bearer: bool) -> Way:
    where = {"cookie": "", "header": "Authorization"} if bearer else {"cookie": "id_token"}
    login = {
        "jwt": {
            "jwks_url": server.url + "/.well-known/jwks.json",
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "algorithms": ["RS256"],
            "login_url": "https://shop.example.com/login?next={next}",
            **where,
        }
    }

    def sign_in(app: Quart, client: Client) -> dict[str, str]:
        now = int(Bridge.of(app).clock())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "auth0|alice",
            "iat": now,
            "exp": now + 300,
        }
        token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
        if bearer:
            return {"Authorization": f"Bearer {token}"}
        client.set_cookie("localhost", "id_token", token)
        return {}

    return Way("jwt_bearer" if bearer else "jwt_cookie", login, "auth0|alice", sign_in)


def who_am_i_server() -> LiveServer:
    """The site's own "who am I" URL: its session ``alice-session`` is alice."""
    app = Quart("site")

    @app.get("/whoami")
    async def whoami() -> Any:
        if request.cookies.get("sessionid") == "alice-session":
            return {"user_id": "alice"}
        return {"error": "not signed in"}, 401

    return LiveServer(app).start()


def who_am_i_way(server: LiveServer) -> Way:
    login = {
        "session_check": {
            "url": server.url + "/whoami",
            "cookies": ["sessionid"],
            "user_field": "user_id",
            "login_url": "https://shop.example.com/login?next={next}",
        }
    }

    def sign_in(app: Quart, client: Client) -> dict[str, str]:
        client.set_cookie("localhost", "sessionid", "alice-session")
        return {}

    return Way("who_am_i", login, "alice", sign_in)


@pytest.fixture(params=["site_cookie", "jwt_cookie", "jwt_bearer", "who_am_i"])
def way(request: pytest.FixtureRequest) -> Iterator[Way]:
    servers: list[LiveServer] = []
    if request.param == "site_cookie":
        yield site_cookie_way()
    elif request.param.startswith("jwt"):
        server, key = jwks_server()
        servers.append(server)
        yield jwt_way(server, key, bearer=request.param == "jwt_bearer")
    else:
        servers.append(who_am_i_server())
        yield who_am_i_way(servers[0])
    for server in servers:
        server.stop()


# --- every way in but SSO, in-process -----------------------------------------------------------


async def test_the_third_new_session_in_a_minute_is_refused(
    way: Way, make_app: Callable[..., Quart], fake_state: Any
) -> None:
    app = make_app(way.settings(TWO_A_MINUTE))
    async with app.test_app():
        store = bridge_of(app).store
        browsers = []
        for _ in range(2):
            browser = app.test_client()
            headers = way.sign_in(app, browser)
            answer = await browser.get("/request_tokens", headers=headers)
            assert answer.status_code == 200, await answer.get_data()
            assert "set-cookie" in answer.headers
            browsers.append((browser, headers))
        before = store.snapshot()  # type: ignore[attr-defined]

        third = app.test_client()
        refused = await third.get("/request_tokens", headers=way.sign_in(app, third))
        assert refused.status_code == 429
        assert (await refused.get_json())["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert "set-cookie" not in refused.headers
        assert store.snapshot() == before  # type: ignore[attr-defined]
        assert fake_state.login_calls == 2
        assert len(await bridge_of(app).sessions.sessions_of(way.subject)) == 2

        # The sessions the user already has carry on while new ones are refused.
        for browser, headers in browsers:
            again = await browser.get("/request_tokens", headers=headers)
            assert again.status_code == 200 and "set-cookie" not in again.headers
        assert fake_state.login_calls == 2


async def test_the_live_session_cap_ends_the_oldest(
    way: Way, make_app: Callable[..., Quart], clock: Clock
) -> None:
    app = make_app(way.settings({"sessions_per_user": 2}))
    async with app.test_app():
        browsers = []
        for _ in range(3):
            browser = app.test_client()
            headers = way.sign_in(app, browser)
            assert (await browser.get("/request_tokens", headers=headers)).status_code == 200
            browsers.append((browser, headers))
            clock.advance(1)
        assert len(await bridge_of(app).sessions.sessions_of(way.subject)) == 2
        # The oldest browser's session is gone (its next request starts over); the newest's is not.
        answers = [await b.get("/request_tokens", headers=h) for b, h in (browsers[0], browsers[2])]
        assert ["set-cookie" in a.headers for a in answers] == [True, False]


# --- concurrent sign-ins of one user --------------------------------------------------------------


async def first_requests(apps: list[Quart], n: int) -> list[int]:
    """Start ``n`` new sessions of alice at once, spread over ``apps``; return the statuses."""
    way = site_cookie_way()
    clients = []
    for i in range(n):
        app = apps[i % len(apps)]
        client = app.test_client()
        clients.append((client, way.sign_in(app, client)))
    answers = await asyncio.gather(*(c.get("/request_tokens", headers=h) for c, h in clients))
    return sorted(a.status_code for a in answers)


async def test_concurrent_sign_ins_of_one_user_pass_the_limit_at_most_its_count(
    make_app: Callable[..., Quart], fake_state: Any
) -> None:
    app = make_app(site_cookie_way().settings(TWO_A_MINUTE))
    async with app.test_app():
        assert await first_requests([app], 6) == [200, 200, 429, 429, 429, 429]
        assert len(await bridge_of(app).sessions.sessions_of("alice")) == 2
    assert fake_state.login_calls == 2


@pytest.mark.integration
async def test_two_instances_on_one_redis_share_the_limit(
    make_app: Callable[..., Quart],
    redis_server: RedisServer,  # noqa: F811
    fake_state: Any,
) -> None:
    settings = load_settings(
        None,
        TEST_ENV,
        overrides=_deep_merge(
            base_config(), {"limits": TWO_A_MINUTE, "store": {"url": redis_server.url}}
        ),
    )
    a, b = make_app(settings), make_app(settings)
    async with a.test_app(), b.test_app():
        assert await first_requests([a, b], 6) == [200, 200, 429, 429, 429, 429]
        assert len(await bridge_of(a).sessions.sessions_of("alice")) == 2
    assert fake_state.login_calls == 2


# --- SSO, through the real provider -------------------------------------------------------------


@pytest.fixture
def sso_clock() -> Clock:
    # The provider signs with the real time; the bridge's clock starts there and stays.
    return Clock(time.time())


@pytest.fixture
def sso_bridge(
    real_op: RealProvider, live_fake: LiveServer, sso_clock: Clock
) -> Iterator[Callable[[dict[str, Any]], Quart]]:
    from bridge.app import create_app

    servers: list[LiveServer] = []

    def start(limits: dict[str, Any]) -> Quart:
        app = create_app(real_op.bridge_settings(live_fake.url, limits=limits), clock=sso_clock)
        servers.append(LiveServer(app, port=real_op.bridge_port).start())
        return app

    yield start
    for server in servers:
        server.stop()


def stored(app: Quart) -> dict[str, Any]:
    """The store's contents but the login flow's single-use state (and rate counters)."""
    snapshot: dict[str, Any] = Bridge.of(app).store.snapshot()  # type: ignore[attr-defined]
    return {k: v for k, v in snapshot.items() if ":oidc-state:" not in k}


def refused_sign_in(browser: Browser, app: Quart, accept: str) -> httpx.Response:
    """Sign alice in at the provider, then bring the callback to the bridge with ``accept``;
    check that the refused callback changed nothing stored."""
    start = browser.http.get(f"{browser.bridge_url}/login", params={"next": "/"})
    to_callback = browser.sign_in_at_provider(start, "alice")
    before = stored(app)
    answer = browser.http.get(
        urljoin(str(to_callback.url), to_callback.headers["location"]),
        headers={"Accept": accept},
    )
    assert stored(app) == before
    return answer


@pytest.mark.integration
def test_sso_the_third_new_session_in_a_minute_is_refused(
    sso_bridge: Any, browsers: Any, live_fake: LiveServer
) -> None:
    app = sso_bridge(TWO_A_MINUTE)
    fake = live_fake.app.extensions["fake_sentifyd"]
    laptop, phone = browsers(), browsers()
    for browser in (laptop, phone):
        assert browser.login("alice").status_code == 303
        assert browser.http.get(f"{browser.bridge_url}/request_tokens").status_code == 200
    logins = fake.login_calls

    # A browser gets a page that says so; a script gets the JSON error. Neither a session.
    tablet = browsers()
    page = refused_sign_in(tablet, app, "text/html")
    assert page.status_code == 429 and "text/html" in page.headers["content-type"]
    assert int(page.headers["Retry-After"]) >= 1
    assert "Too many sign-ins" in page.text
    cookie = Bridge.of(app).sessions.cookie_name
    assert cookie not in page.headers.get("set-cookie", "")
    script = browsers()
    answer = refused_sign_in(script, app, "application/json")
    assert answer.status_code == 429 and answer.json()["error"] == "rate_limited"
    assert int(answer.headers["Retry-After"]) >= 1
    assert cookie not in answer.headers.get("set-cookie", "")
    for refused in (tablet, script):
        assert refused.session()["signed_in"] is False
        assert refused.http.get(f"{refused.bridge_url}/request_tokens").status_code == 401
    assert len(sso_records(app)) == 2

    # A refused sign-in in a browser that has a session leaves that session as it was.
    assert refused_sign_in(laptop, app, "text/html").status_code == 429
    for browser in (laptop, phone):
        assert browser.session()["signed_in"] is True
        assert browser.http.get(f"{browser.bridge_url}/request_tokens").status_code == 200
    assert fake.login_calls == logins


@pytest.mark.integration
def test_sso_the_live_session_cap_ends_the_oldest(
    sso_bridge: Any, browsers: Any, sso_clock: Clock
) -> None:
    app = sso_bridge({"sessions_per_user": 2})
    laptop, phone, tablet = browsers(), browsers(), browsers()
    for browser in (laptop, phone, tablet):
        assert browser.login("alice").status_code == 303
        sso_clock.advance(1)
    assert len(sso_records(app)) == 2
    assert laptop.session()["signed_in"] is False
    assert phone.session()["signed_in"] is True and tablet.session()["signed_in"] is True


async def test_a_refused_sso_sign_in_gives_the_provider_grant_back(
    clock: Clock, fake: Quart
) -> None:
    # Which calls the bridge made to the provider is seen only on a provider the test controls.
    op = ControlledProvider(clock=clock)
    app = make_sso_app(op, clock, fake, sections={"limits": {"new_sessions_per_user": "1/minute"}})
    async with app.test_app():
        first = app.test_client()
        assert (await sign_in(first, op)).status_code == 303
        second = app.test_client()
        params = await start(second)
        op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
        refused = await callback(second, op, params)
        assert refused.status_code == 429
        assert (await refused.get_json())["error"] == "rate_limited"
        assert len(sso_records(app)) == 1
        revoked = op.sent("/revoke")
        assert len(revoked) == 1 and b"op-refresh-token-value" in revoked[0].content
