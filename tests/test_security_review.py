"""Findings of the security review of the token path, the identity sources and the OIDC code,
each reproduced: nested JSON, discovery aiming at the bridge's own network, EdDSA ID tokens,
the itsdangerous default salt, pages without a CSP, a JWKS refetch that fails, and a ``Host``
header werkzeug refuses (under both ASGI servers ``serve`` offers)."""

from __future__ import annotations

import json
import logging
import socket
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from joserfc.errors import SecurityWarning
from joserfc.jwk import OKPKey, RSAKey
from quart import Quart

from bridge.doubles.demo import create_demo_app
from bridge.errors import ConfigError
from bridge.identity.oidc import FETCH_BACKOFF, JWKS_MAX_AGE, OIDCProvider
from bridge.identity.oidc.tokens import _half_hash
from bridge.settings.loader import load_settings
from support.app import Clock, login
from support.config import PUBLIC_URL, SITE_KEY, TEST_ENV, base_config, make_settings
from support.live import LiveServer
from support.oidc import (
    ControlledProvider,
    callback,
    make_sso_app,
    oidc_settings,
    query_of,
    session_of,
    sign_in,
)

# --- nested JSON -----------------------------------------------------------------------------


@pytest.mark.parametrize("signed_in", [False, True])
async def test_token_request_with_json_nested_beyond_the_stack_is_400(
    make_app: Callable[..., Quart], signed_in: bool
) -> None:
    app = make_app()
    async with app.test_app():
        client = app.test_client()
        if signed_in:
            login(client, app)
        response = await client.post(
            "/request_tokens", data=b"[" * 30_000, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert (await response.get_json())["error"] == "bad_request"


# --- discovery may not aim at the bridge's own network ---------------------------------------

PRIVATE_URLS = [
    "http://localhost/x",
    "https://localhost/x",
    "https://127.0.0.1/x",
    "https://127.8.9.10/x",
    "https://[::1]/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://10.0.0.5/x",
    "https://192.168.1.1/x",
    "https://172.16.0.1/x",
    "https://169.254.169.254/latest/meta-data",
    "https://0.0.0.0/x",
    "https://2130706433/x",
    "https://0x7f.1/x",
    "https://intranet.localhost/x",
    "https://[fd00::1]/x",
]


@pytest.mark.parametrize("endpoint", ["token_endpoint", "jwks_uri", "authorization_endpoint"])
@pytest.mark.parametrize("url", PRIVATE_URLS)
async def test_remote_provider_cannot_point_discovery_at_private_addresses(
    fake: Quart, clock: Clock, endpoint: str, url: str
) -> None:
    op = ControlledProvider(clock=clock, metadata_extra={endpoint: url})
    app = make_sso_app(op, clock, fake)
    async with app.test_app():
        response = await app.test_client().get("/login")
        assert response.status_code == 503
        assert (await response.get_json())["error"] == "identity_provider_unavailable"
        assert [r.url.path for r in op.requests] == ["/.well-known/openid-configuration"]


@pytest.mark.parametrize("endpoint", ["userinfo_endpoint", "revocation_endpoint"])
async def test_remote_provider_private_userinfo_and_revocation_are_never_called(
    fake: Quart, clock: Clock, endpoint: str
) -> None:
    op = ControlledProvider(
        clock=clock, metadata_extra={endpoint: "https://10.1.2.3/x"}, userinfo={"sub": "alice-sub"}
    )
    app = make_sso_app(op, clock, fake, claims_from_userinfo=True)
    async with app.test_app():
        client = app.test_client()
        assert (await sign_in(client, op)).status_code == 303
        csrf = (await session_of(client))["logout"]["csrf_token"]
        await client.post("/logout", form={"csrf_token": csrf}, headers={"Origin": PUBLIC_URL})
    assert not [r for r in op.requests if r.url.host == "10.1.2.3"]


def provider_for(issuer: str) -> OIDCProvider:
    settings = oidc_settings(PUBLIC_URL, {"issuer": issuer, "client_id": "c"})
    return OIDCProvider(settings.oidc[0], PUBLIC_URL)


def test_a_loopback_issuer_may_have_loopback_endpoints() -> None:
    local = provider_for("http://127.0.0.1:9000")
    assert local.safe_endpoint("http://127.0.0.1:9000/token")
    assert local.safe_endpoint("http://localhost:9001/jwks")
    assert not local.safe_endpoint("http://op.example.test/token")  # plain http, off-machine
    remote = provider_for("https://op.example.test")
    assert remote.safe_endpoint("https://op.example.test/token")
    assert remote.safe_endpoint("https://8.8.8.8/token")  # a public address is only unusual
    assert not any(remote.safe_endpoint(url) for url in PRIVATE_URLS)


# --- EdDSA -----------------------------------------------------------------------------------


async def sign_in_with(app: Quart, op: ControlledProvider, alg: str) -> Any:
    """A login whose ID token is signed with ``alg`` (and carries a matching at_hash)."""
    client = app.test_client()
    params = query_of((await client.get("/login")).headers["Location"])
    # at_hash for Ed25519 is the left half of SHA-512 (OpenID Connect Core 3.1.3.6).
    at_hash = (_half_hash("op-access-token-value", alg) or b"").decode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc: the name "EdDSA" is deprecated
        id_token = op.sign(op.claims(params["nonce"], at_hash=at_hash), header={"alg": alg})
    op.token_response = op.tokens(id_token)
    return client, await callback(client, op, params)


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519"])
async def test_eddsa_id_tokens_verify_against_okp_keys(fake: Quart, clock: Clock, alg: str) -> None:
    key = OKPKey.generate_key("Ed25519", {"kid": "ed1", "use": "sig"}, private=True)
    op = ControlledProvider(
        clock=clock,
        keys=[key],  # type: ignore[list-item]
        metadata_extra={"id_token_signing_alg_values_supported": [alg]},
    )
    app = make_sso_app(op, clock, fake)
    async with app.test_app():
        client, response = await sign_in_with(app, op, alg)
        assert response.status_code == 303, await response.get_data()
        assert (await session_of(client))["signed_in"] is True


async def test_eddsa_token_with_only_rsa_keys_published_is_refused(
    fake: Quart, clock: Clock
) -> None:
    okp = OKPKey.generate_key("Ed25519", {"kid": "k1"}, private=True)
    rsa = RSAKey.generate_key(2048, {"kid": "k1", "use": "sig"}, private=True)
    op = ControlledProvider(
        clock=clock,
        keys=[okp],  # type: ignore[list-item]
        published=[rsa],
        metadata_extra={"id_token_signing_alg_values_supported": ["Ed25519", "RS256"]},
    )
    app = make_sso_app(op, clock, fake)
    async with app.test_app():
        _, response = await sign_in_with(app, op, "Ed25519")
        assert response.status_code == 400
        assert (await response.get_json())["error"] == "login_failed"


# --- itsdangerous needs its own salt ---------------------------------------------------------


def itsdangerous_settings(**cookie: Any) -> Any:
    data = base_config()
    data["login"]["cookie"] = {**data["login"]["cookie"], "format": "itsdangerous", **cookie}
    return load_settings(None, TEST_ENV, overrides=data)


def test_itsdangerous_format_without_a_salt_stops_startup() -> None:
    with pytest.raises(ConfigError, match=r"login\.cookie\.salt: required"):
        itsdangerous_settings()


async def test_itsdangerous_token_under_another_salt_is_no_login(fake: Quart, clock: Clock) -> None:
    """An e-mail confirmation the site signed with the library's default salt is not a login."""
    from bridge.app import create_app

    class OnTheBridgesClock(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    settings = itsdangerous_settings(salt="shop-login")
    app = create_app(settings, sentifyd_transport=httpx.ASGITransport(app=fake), clock=clock)
    async with app.test_app():
        for salt, status in (("itsdangerous", 401), ("shop-login", 200)):
            serializer = URLSafeTimedSerializer(SITE_KEY, salt=salt, signer=OnTheBridgesClock)
            token = serializer.dumps({"user_id": "alice"})
            client = app.test_client()
            client.set_cookie("localhost", "session", str(token))
            assert (await client.get("/request_tokens")).status_code == status


# --- one CSP on every HTML answer ------------------------------------------------------------


def assert_one_csp_unframeable(response: Any) -> None:
    policies = response.headers.getlist("Content-Security-Policy")
    assert len(policies) == 1, policies
    assert "frame-ancestors 'self'" in policies[0]
    assert "default-src 'self'" in policies[0]


async def test_the_403_page_cannot_be_framed(make_app: Callable[..., Quart]) -> None:
    app = make_app(make_settings({"login": {"cookie": {"logout_url": "/logout"}}}))
    async with app.test_app():
        client = app.test_client()
        login(client, app, "bob", groups=["staff"])
        response = await client.get("/avatars/premium")
        assert response.status_code == 403 and response.mimetype == "text/html"
        assert_one_csp_unframeable(response)


async def test_the_avatar_page_has_the_same_one_policy(client: Any, app: Quart) -> None:
    login(client, app, "alice", groups=["customers"])
    response = await client.get("/avatars/premium")
    assert response.status_code == 200
    assert_one_csp_unframeable(response)


async def test_the_sign_in_error_page_cannot_be_framed(fake: Quart, clock: Clock) -> None:
    op = ControlledProvider(clock=clock)
    app = make_sso_app(op, clock, fake)
    async with app.test_app():
        response = await app.test_client().get(
            "/callback",
            query_string={"code": "x", "state": "forged"},
            headers={"Accept": "text/html"},
        )
        assert response.status_code == 400 and response.mimetype == "text/html"
        assert_one_csp_unframeable(response)


async def test_the_demo_login_page_cannot_be_framed() -> None:
    app = create_demo_app(port=8000)
    async with app.test_app():
        response = await app.test_client().get("/demo/login")
        assert response.status_code == 200
        assert_one_csp_unframeable(response)


async def test_json_answers_carry_no_page_policy(client: Any) -> None:
    response = await client.get("/request_tokens")
    assert "Content-Security-Policy" not in response.headers


# --- the JWKS cache when the provider is down ------------------------------------------------


class JwksDown:
    """A ControlledProvider whose JWKS endpoint can fail on its own."""

    def __init__(self, op: ControlledProvider) -> None:
        self.op = op
        self.down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down and request.url.path == "/jwks":
            self.op.requests.append(request)
            raise httpx.ConnectError("jwks down", request=request)
        return self.op.handler(request)


@pytest.fixture
async def jwks_app(
    fake: Quart, clock: Clock
) -> AsyncIterator[tuple[Quart, ControlledProvider, JwksDown]]:
    from bridge.app import create_app

    op = ControlledProvider(clock=clock)
    switch = JwksDown(op)
    settings = oidc_settings(PUBLIC_URL, {"issuer": op.issuer, "client_id": op.client_id})
    app = create_app(
        settings,
        oidc_transport=httpx.MockTransport(switch.handler),
        sentifyd_transport=httpx.ASGITransport(app=fake),
        clock=clock,
    )
    async with app.test_app():
        yield app, op, switch


async def test_failed_jwks_refetch_keeps_the_cached_keys_and_backs_off(
    jwks_app: tuple[Quart, ControlledProvider, JwksDown], clock: Clock
) -> None:
    app, op, switch = jwks_app
    assert (await sign_in(app.test_client(), op)).status_code == 303
    assert len(op.sent("/jwks")) == 1
    clock.advance(JWKS_MAX_AGE + 1)
    switch.down = True
    for _ in range(3):  # logins go on with the cached keys; the provider is asked once
        assert (await sign_in(app.test_client(), op)).status_code == 303
    assert len(op.sent("/jwks")) == 2
    clock.advance(FETCH_BACKOFF)
    assert (await sign_in(app.test_client(), op)).status_code == 303
    assert len(op.sent("/jwks")) == 3  # asked again once the backoff is over
    switch.down = False
    clock.advance(2 * FETCH_BACKOFF)
    assert (await sign_in(app.test_client(), op)).status_code == 303
    assert len(op.sent("/jwks")) == 4
    assert (await sign_in(app.test_client(), op)).status_code == 303
    assert len(op.sent("/jwks")) == 4  # fresh again: cached for the hour


# --- a Host header werkzeug refuses ----------------------------------------------------------

BAD_HOSTS = ["a..b", "x" * 80 + ".example", "shop..example.com:443"]


def raw_get(port: int, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn"])
def live_bridge(request: pytest.FixtureRequest) -> Any:
    from bridge.app import create_app

    server = LiveServer(create_app(make_settings()), server=request.param).start()
    yield server
    server.stop()


@pytest.mark.integration
@pytest.mark.parametrize("host", BAD_HOSTS, ids=["empty-label", "long-label", "empty-label-port"])
@pytest.mark.parametrize("path", ["/request_tokens", "/", "/healthz", "/nowhere"])
def test_bad_host_is_a_logged_400_on_every_route(
    live_bridge: LiveServer, caplog: pytest.LogCaptureFixture, host: str, path: str
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.request")
    status, headers, body = raw_get(live_bridge.port, path, host)
    assert status == 400, body
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "bad_request"
    assert headers["x-request-id"]
    logged = [r for r in caplog.records if r.name == "bridge.request"]
    assert [r.fields["status"] for r in logged] == [400]  # type: ignore[attr-defined]
    assert logged[0].fields["request_id"] == headers["x-request-id"]  # type: ignore[attr-defined]


# --- static files under a request that is cancelled -------------------------------------------


@pytest.mark.integration
def test_head_of_a_static_file_leaves_no_file_open(live_bridge: LiveServer) -> None:
    """Found by tests/test_hostile_live.py: a HEAD whose connection closes cancelled the request
    while Quart opened the file in a worker thread, and the file stayed open."""
    import gc

    for _ in range(3):
        request = "HEAD /static/bridge.css HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", live_bridge.port), timeout=10) as sock:
            sock.sendall(request.encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    gc.collect()  # an unclosed file warns here, and the warning fails the test


async def test_static_files_keep_ranges_and_validators(client: Any) -> None:
    whole = await client.get("/static/bridge.css")
    data = await whole.get_data()
    assert whole.status_code == 200 and whole.headers["ETag"]
    part = await client.get("/static/bridge.css", headers={"Range": "bytes=2-9"})
    assert part.status_code == 206 and await part.get_data() == data[2:10]
    assert part.headers["Content-Length"] == "8"
    again = await client.get("/static/bridge.css", headers={"If-None-Match": whole.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    ("logout_url", "as_form"), [("/logout", True), ("//elsewhere.example/logout", False)]
)
async def test_only_a_path_on_this_site_signs_out_with_a_form_on_every_page(
    make_app: Callable[..., Quart], logout_url: str, as_form: bool
) -> None:
    # A form would POST the page's CSRF-bearing sign-out to //host, another site.
    app = make_app(make_settings({"login": {"cookie": {"logout_url": logout_url}}}))
    async with app.test_app():
        client = app.test_client()
        login(client, app, "alice", groups=["customers"])
        page = await (await client.get("/")).get_data(as_text=True)
        assert (f'<form class="inline" method="post" action="{logout_url}">' in page) is as_form
        assert (f'href="{logout_url}">Sign out</a>' in page) is not as_form
        answer = await client.get("/session", headers={"Sec-Fetch-Site": "same-origin"})
        session = await answer.get_json()
        assert session["session"] is None  # a site-cookie visitor signs out at the site
        assert session["logout"] == {"url": logout_url, "method": "POST" if as_form else "GET"}
        login(client, app, "bob", groups=["staff"])
        refused = await (await client.get("/avatars/premium")).get_data(as_text=True)
        assert (f'method="post" action="{logout_url}">' in refused) is as_form
