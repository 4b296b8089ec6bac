"""Hostile peers over real sockets: a Sentifyd, an OpenID provider and a site's who-am-I URL that
drip their answers, never end them, break their encoding or nest their JSON beyond the stack.

Each gets one total deadline per call (connect, head and body) and a cap on its body while it
streams, and the visitor a clean JSON error: 504 ``upstream_timeout`` or 502
``upstream_unavailable`` for Sentifyd, 503 ``identity_provider_unavailable`` for the others.
That the bridge gave up in time is read from the peer (it never got to send its whole answer),
not from a clock.
"""

from __future__ import annotations

import gzip
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from quart import Quart

from bridge.app import create_app
from bridge.settings.loader import load_settings
from support.app import login
from support.config import TEST_ENV, base_config, make_settings
from support.oidc import oidc_settings
from support.peers import Answer, HostilePeer

pytestmark = pytest.mark.integration

DEADLINE = 0.5  # each peer's whole-call deadline here
DRIP = 0.05  # a byte every 50 ms: never slow enough to trip a per-read timeout
NESTED = b"[" * 30_000
LOGIN_PATH = "/api/v1/chatbot/login"


def sentifyd_tokens() -> dict[str, Any]:
    return {
        "access_token": "acc-" + secrets.token_urlsafe(16),
        "refresh_token": "ref-" + secrets.token_urlsafe(16),
        "expires_in": 60,
    }


@pytest.fixture
def peer() -> Iterator[HostilePeer]:
    with HostilePeer() as server:
        yield server


@pytest.fixture
async def sentifyd_app(peer: HostilePeer) -> AsyncIterator[Quart]:
    settings = make_settings({"sentifyd": {"backend": peer.url, "timeout": DEADLINE, "retries": 0}})
    application = create_app(settings)
    async with application.test_app():
        yield application


async def ask_tokens(app: Quart) -> tuple[int, dict[str, Any]]:
    client = app.test_client()
    login(client, app, "alice")
    response = await client.get("/request_tokens")
    return response.status_code, await response.get_json()


# --- Sentifyd --------------------------------------------------------------------------------


async def test_sentifyd_dripping_its_answer_is_cut_off_at_the_deadline(
    sentifyd_app: Quart, peer: HostilePeer
) -> None:
    body = json.dumps(sentifyd_tokens()).encode().ljust(400)
    peer.routes[LOGIN_PATH] = Answer(body=body, drip=DRIP)
    status, answer = await ask_tokens(sentifyd_app)
    assert (status, answer["error"]) == (504, "upstream_timeout")
    (call,) = peer.on(LOGIN_PATH)
    assert not call.finished and call.sent < len(body)


async def test_sentifyd_answer_without_end_is_cut_off_at_the_cap(
    sentifyd_app: Quart, peer: HostilePeer
) -> None:
    peer.routes[LOGIN_PATH] = Answer(body=b'{"pad": "' + b"x" * 65_536, endless=True)
    status, answer = await ask_tokens(sentifyd_app)
    assert (status, answer["error"]) == (502, "upstream_unavailable")
    (call,) = peer.on(LOGIN_PATH)
    assert not call.finished


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Encoding": "gzip"}, b"this is not gzip at all"),
        ({"Content-Encoding": "gzip"}, gzip.compress(b'{"access_token": "x"}')[:-6]),  # cut
        ({"Content-Encoding": "deflate"}, b"\x00\x01\x02 not deflate"),
        ({"Content-Encoding": "br"}, b"\x0b\x02\x80{}\x03"),
        ({"Content-Encoding": "gzip, gzip"}, gzip.compress(gzip.compress(b"{}"))),
        # ~16 KB on the wire, 20 MB inflated: refused once the cap is reached.
        ({"Content-Encoding": "gzip"}, gzip.compress(b'{"a": "' + b"0" * 20_000_000 + b'"}')),
        ({}, NESTED),
    ],
    ids=[
        "not-gzip",
        "truncated-gzip",
        "not-deflate",
        "brotli",
        "gzip-twice",
        "gzip-bomb",
        "nested",
    ],
)
async def test_sentifyd_answer_that_does_not_decode_is_502(
    sentifyd_app: Quart, peer: HostilePeer, headers: dict[str, str], body: bytes
) -> None:
    peer.routes[LOGIN_PATH] = Answer(200, {"Content-Type": "application/json", **headers}, body)
    status, answer = await ask_tokens(sentifyd_app)
    assert (status, answer["error"]) == (502, "upstream_unavailable")


async def test_sentifyd_nested_json_in_its_tokens_exp_is_only_ignored(
    sentifyd_app: Quart, peer: HostilePeer
) -> None:
    """An access token whose payload nests beyond the stack: its exp is unreadable, no more."""
    part = jwt_part(NESTED[:6000])
    tokens = {**sentifyd_tokens(), "access_token": f"{part}.{part}.sig"}
    del tokens["expires_in"]
    peer.routes[LOGIN_PATH] = Answer.json(tokens)
    status, _ = await ask_tokens(sentifyd_app)
    assert status == 200


@pytest.mark.parametrize("coding", ["gzip", "deflate", "identity"])
async def test_sentifyd_compressed_answers_within_the_cap_still_work(
    sentifyd_app: Quart, peer: HostilePeer, coding: str
) -> None:
    """The decoder and the cap are on by default: an honest, compressed answer passes."""
    import zlib

    raw = json.dumps(sentifyd_tokens()).encode()
    body = {"gzip": gzip.compress, "deflate": zlib.compress, "identity": bytes}[coding](raw)
    peer.routes[LOGIN_PATH] = Answer(
        200, {"Content-Type": "application/json", "Content-Encoding": coding}, body
    )
    status, answer = await ask_tokens(sentifyd_app)
    assert status == 200, answer
    (call,) = peer.on(LOGIN_PATH)
    assert call.headers["accept-encoding"] == "gzip, deflate"


def jwt_part(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# --- the OpenID provider ---------------------------------------------------------------------


class PeerProvider:
    """An OpenID provider served by a hostile peer: honest documents unless a test says not."""

    def __init__(self, peer: HostilePeer) -> None:
        self.peer = peer
        self.issuer = peer.url
        self.key = RSAKey.generate_key(
            2048, {"kid": "k1", "use": "sig", "alg": "RS256"}, private=True
        )
        self.metadata = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "id_token_signing_alg_values_supported": ["RS256"],
        }
        peer.routes["/.well-known/openid-configuration"] = Answer.json(self.metadata)
        peer.routes["/jwks"] = Answer.json(KeySet([self.key]).as_dict(private=False))
        peer.routes["/userinfo"] = Answer.json({"sub": "alice-sub", "email": "a@example.com"})

    def tokens_for(self, nonce: str, now: int) -> dict[str, Any]:
        claims = {
            "iss": self.issuer,
            "sub": "alice-sub",
            "aud": "bridge-client",
            "iat": now,
            "exp": now + 600,
            "nonce": nonce,
        }
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
        return {"access_token": "op-access", "token_type": "Bearer", "id_token": id_token}


@pytest.fixture
def provider(peer: HostilePeer) -> PeerProvider:
    return PeerProvider(peer)


@pytest.fixture
async def sso_app(provider: PeerProvider) -> AsyncIterator[Quart]:
    settings = oidc_settings(
        "http://127.0.0.1:8000",
        {
            "issuer": provider.issuer,
            "client_id": "bridge-client",
            "client_secret_env": "OIDC_CLIENT_SECRET",
            "claims_from_userinfo": True,
            "timeout": DEADLINE,
        },
    )
    application = create_app(settings)
    async with application.test_app():
        yield application


async def sign_in(app: Quart, provider: PeerProvider) -> tuple[int, dict[str, Any]]:
    import time

    client = app.test_client()
    started = await client.get("/login")
    if started.status_code != 302:
        return started.status_code, await started.get_json()
    params = {k: v[0] for k, v in parse_qs(urlsplit(started.headers["Location"]).query).items()}
    provider.peer.routes.setdefault(
        "/token", Answer.json(provider.tokens_for(params["nonce"], int(time.time())))
    )
    response = await client.get("/callback", query_string={"code": "c", "state": params["state"]})
    return response.status_code, await response.get_json() if response.status_code != 303 else {}


async def test_provider_answers_honestly_and_sign_in_works(
    sso_app: Quart, provider: PeerProvider
) -> None:
    """The deadline and cap are on by default: a provider that answers normally passes."""
    assert (await sign_in(sso_app, provider))[0] == 303


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/jwks", "/token", "/userinfo"]
)
@pytest.mark.parametrize("fault", ["drip", "endless", "not-gzip", "nested"])
async def test_provider_call_that_misbehaves_is_503_in_time(
    sso_app: Quart, provider: PeerProvider, path: str, fault: str
) -> None:
    honest = provider.peer.routes.get(path)
    body = honest.body if honest else json.dumps({"access_token": "x"}).encode()
    provider.peer.routes[path] = {
        "drip": Answer(body=body.ljust(400), drip=DRIP),
        "endless": Answer(body=b'{"pad": "' + b"x" * 65_536, endless=True),
        "not-gzip": Answer(200, {"Content-Encoding": "gzip"}, b"not gzip"),
        "nested": Answer(body=NESTED),
    }[fault]
    status, answer = await sign_in(sso_app, provider)
    assert (status, answer["error"]) == (503, "identity_provider_unavailable"), answer
    for call in provider.peer.on(path):
        if fault in ("drip", "endless"):
            assert not call.finished


# --- the site's who-am-I URL -----------------------------------------------------------------


@pytest.fixture
async def whoami_app(peer: HostilePeer) -> AsyncIterator[Quart]:
    data = base_config()
    data["login"] = {
        "session_check": {
            "url": peer.url + "/whoami",
            "cookies": ["sessionid"],
            "timeout": DEADLINE,
            "cache_ttl": 0,
            "login_url": "https://shop.example.com/login?next={next}",
        }
    }
    data["sentifyd"]["backend"] = peer.url
    application = create_app(load_settings(None, TEST_ENV, overrides=data))
    async with application.test_app():
        yield application


async def ask_whoami(app: Quart, cookie: str) -> tuple[int, dict[str, Any]]:
    client = app.test_client(use_cookies=False)
    response = await client.get("/request_tokens", headers={"Cookie": cookie})
    return response.status_code, await response.get_json()


@pytest.mark.parametrize("fault", ["drip", "endless", "not-gzip", "nested"])
async def test_whoami_that_misbehaves_is_503_in_time(
    whoami_app: Quart, peer: HostilePeer, fault: str
) -> None:
    peer.routes["/whoami"] = {
        "drip": Answer(body=b'{"user_id": "alice"}'.ljust(400), drip=DRIP),
        "endless": Answer(body=b'{"pad": "' + b"x" * 65_536, endless=True),
        "not-gzip": Answer(200, {"Content-Encoding": "gzip"}, b"not gzip"),
        "nested": Answer(body=NESTED),
    }[fault]
    status, answer = await ask_whoami(whoami_app, "sessionid=alice-session")
    assert (status, answer["error"]) == (503, "identity_provider_unavailable")
    (call,) = peer.on("/whoami")
    if fault in ("drip", "endless"):
        assert not call.finished


async def test_whoami_gets_a_plain_cookie_value_as_sent(
    whoami_app: Quart, peer: HostilePeer
) -> None:
    peer.routes["/whoami"] = Answer.json({"user_id": "alice"})
    peer.routes[LOGIN_PATH] = Answer.json(sentifyd_tokens())
    status, _ = await ask_whoami(whoami_app, "sessionid=alice-session.AbC_09-x")
    assert status == 200
    (call,) = peer.on("/whoami")
    assert call.headers["cookie"] == "sessionid=alice-session.AbC_09-x"


@pytest.mark.parametrize(
    "cookie",
    [
        r'sessionid="x\073 other=1"',  # unquoted by the parser into "x; other=1"
        'sessionid="a b"',
        'sessionid="a,b"',
        r'sessionid="a\"b"',
        'sessionid="a\\\\b"',
    ],
)
async def test_whoami_never_gets_a_cookie_value_that_is_not_cookie_octets(
    whoami_app: Quart, peer: HostilePeer, cookie: str
) -> None:
    peer.routes["/whoami"] = Answer.json({"user_id": "alice"})
    status, answer = await ask_whoami(whoami_app, cookie)
    assert (status, answer["error"]) == (401, "login_required")
    assert peer.on("/whoami") == []  # nothing was forwarded, so nothing was asked


async def test_an_egress_proxy_named_in_the_environment_is_used_and_bounded(
    peer: HostilePeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx ignores HTTP(S)_PROXY once given a transport; the bridge mounts them itself."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", peer.url)
    upstream = "http://127.0.0.1:9"  # nothing listens there: only the proxy can answer
    body = json.dumps(sentifyd_tokens()).encode()
    peer.routes[upstream + LOGIN_PATH] = Answer(body=body.ljust(400), drip=DRIP)
    settings = make_settings({"sentifyd": {"backend": upstream, "timeout": DEADLINE, "retries": 0}})
    app = create_app(settings)
    async with app.test_app():
        status, answer = await ask_tokens(app)
        assert (status, answer["error"]) == (504, "upstream_timeout")
        (call,) = peer.on(upstream + LOGIN_PATH)
        assert not call.finished
        peer.routes[upstream + LOGIN_PATH] = Answer.json(sentifyd_tokens())
        assert (await ask_tokens(app))[0] == 200
