"""[login.jwt]: a site whose login is a JWT, verified against a JWKS served over HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from quart import Quart, request

from bridge.errors import ConfigError, IdentityProviderUnavailable
from bridge.identity import Identity
from bridge.identity.jwt_login import JWKS_MIN_REFETCH, JWTSource
from bridge.identity.refetch import FETCH_BACKOFF, JWKS_MAX_AGE
from bridge.settings.loader import load_settings
from bridge.settings.schema import Settings
from support.app import Clock
from support.config import TEST_ENV, base_config
from support.live import LiveServer

ISSUER = "https://tenant.example-idp.com/"
AUDIENCE = "https://shop.example.com/api"


@dataclass
class JWKSServer:
    """A provider's JWKS endpoint on 127.0.0.1 whose key set the test changes."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    status: int = 200
    url: str = ""
    raw: bytes | None = None  # answered as is, instead of the key set


@pytest.fixture
def jwks() -> Iterator[JWKSServer]:
    state = JWKSServer()
    app = Quart("jwks")

    @app.get("/.well-known/jwks.json")
    async def serve() -> Any:
        state.fetches += 1
        if state.raw is not None:
            return state.raw, state.status, {"Content-Type": "application/json"}
        return {"keys": state.keys}, state.status

    server = LiveServer(app).start()
    state.url = server.url + "/.well-known/jwks.json"
    yield state
    server.stop()


def rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


@pytest.fixture(scope="module")
def key1() -> RSAKey:
    return rsa("key-1")


@pytest.fixture(scope="module")
def key2() -> RSAKey:
    return rsa("key-2")


def settings_for(jwks: JWKSServer, **jwt_settings: Any) -> Settings:
    config = base_config()
    config["login"] = {
        "jwt": {
            "jwks_url": jwks.url,
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "algorithms": ["RS256", "ES256"],
            "cookie": "id_token",
            "login_url": "https://shop.example.com/login?next={next}",
            **jwt_settings,
        }
    }
    return load_settings(None, TEST_ENV, overrides=config)


def source(jwks: JWKSServer, clock: Clock, **jwt_settings: Any) -> JWTSource:
    settings = settings_for(jwks, **jwt_settings).jwt
    assert settings is not None
    return JWTSource(settings, clock=clock)


def sign(key: Any, clock: Clock, alg: str = "RS256", **claims: Any) -> str:
    now = int(clock())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "auth0|alice", "iat": now, "exp": now + 300}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": key.kid}, body, key)


def raw_jwt(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return (
        f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}.{part(signature)}"
    )


async def identify(src: JWTSource, token: str | None, *, bearer: bool = False) -> Identity | None:
    headers = {}
    if token is not None:
        headers = (
            {"Authorization": f"Bearer {token}"} if bearer else {"Cookie": f"id_token={token}"}
        )
    async with Quart(__name__).test_request_context("/", headers=headers):
        return await src.identify(request)


async def test_a_valid_token_from_the_cookie_is_a_login(jwks: JWKSServer, key1: RSAKey) -> None:
    clock = Clock()
    jwks.keys = [key1.as_dict(private=False)]
    src = source(jwks, clock, claim_fields=["email"])
    identity = await identify(src, sign(key1, clock, email="a@example.com"))
    assert identity is not None and identity.subject == "auth0|alice" and identity.method == "jwt"
    assert dict(identity.claims) == {"email": "a@example.com"}
    await src.aclose()


async def test_a_bearer_token_and_a_pointer_user_field(jwks: JWKSServer, key1: RSAKey) -> None:
    clock = Clock()
    jwks.keys = [key1.as_dict(private=False)]
    src = source(jwks, clock, cookie="", header="Authorization", user_field="/app_metadata/id")
    token = sign(key1, clock, app_metadata={"id": 1234})
    identity = await identify(src, token, bearer=True)
    assert identity is not None and identity.subject == "1234"  # ids are strings
    assert await identify(src, token) is None  # a cookie is not where this site keeps it
    await src.aclose()


async def test_keys_are_cached(jwks: JWKSServer, key1: RSAKey) -> None:
    clock = Clock()
    jwks.keys = [key1.as_dict(private=False)]
    src = source(jwks, clock)
    for _ in range(5):
        assert await identify(src, sign(key1, clock)) is not None
    assert jwks.fetches == 1
    await src.aclose()


async def test_rotated_key_is_fetched_but_unknown_kids_at_most_every_ten_seconds(
    jwks: JWKSServer, key1: RSAKey, key2: RSAKey
) -> None:
    clock = Clock()
    jwks.keys = [key1.as_dict(private=False)]
    src = source(jwks, clock)
    assert await identify(src, sign(key1, clock)) is not None
    # The provider rotates: key-2 is published and signs the new tokens.
    jwks.keys = [key2.as_dict(private=False), key1.as_dict(private=False)]
    token = sign(key2, clock)
    assert await identify(src, token) is None  # fetched a moment ago: not refetched yet
    forged = [sign(rsa(f"made-up-{i}"), clock) for i in range(3)]
    for value in forged:
        assert await identify(src, value) is None
    assert jwks.fetches == 1
    clock.advance(JWKS_MIN_REFETCH)
    assert await identify(src, token) is not None
    assert jwks.fetches == 2
    for value in forged:  # unknown kids again, within the interval: no new fetch
        assert await identify(src, value) is None
    assert jwks.fetches == 2
    await src.aclose()


@pytest.mark.parametrize(
    "case",
    ["expired", "not_yet", "no_exp", "issuer", "audience", "tampered", "wrong_key", "alg_none",
     "hs256_public_key", "hs256_jwk", "alg_not_configured", "oversized", "malformed"],
)  # fmt: skip
async def test_bad_tokens_are_not_a_login(jwks: JWKSServer, key1: RSAKey, case: str) -> None:
    clock = Clock()
    jwks.keys = [key1.as_dict(private=False)]
    src = source(jwks, clock, algorithms=["RS256"])
    good = sign(key1, clock)
    header = {"alg": "HS256", "kid": "key-1", "typ": "JWT"}
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "admin", "exp": int(clock()) + 300}
    public_pem = key1.as_pem(private=False)
    signing_input = raw_jwt(header, claims).rsplit(".", 1)[0].encode()

    def hs256(secret: bytes) -> str:
        mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
        return raw_jwt(header, claims, mac)

    ec = ECKey.generate_key("P-256", parameters={"kid": "key-1"})
    tokens: dict[str, Callable[[], str]] = {
        "expired": lambda: sign(key1, clock, iat=int(clock()) - 900, exp=int(clock()) - 120),
        "not_yet": lambda: sign(key1, clock, nbf=int(clock()) + 600),
        "no_exp": lambda: sign(key1, clock, exp=None),
        "issuer": lambda: sign(key1, clock, iss="https://evil.example/"),
        "audience": lambda: sign(key1, clock, aud="https://other-site.example/api"),
        "tampered": lambda: good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB"),
        "wrong_key": lambda: sign(rsa("key-1"), clock),  # same kid, another private key
        "alg_none": lambda: raw_jwt({"alg": "none", "kid": "key-1"}, claims),
        "hs256_public_key": lambda: hs256(public_pem),
        "hs256_jwk": lambda: hs256(json.dumps(key1.as_dict(private=False)).encode()),
        "alg_not_configured": lambda: sign(ec, clock, alg="ES256"),
        "oversized": lambda: sign(key1, clock, pad="x" * 20000),
        "malformed": lambda: "not.a.jwt",
    }
    assert await identify(src, tokens[case]()) is None
    assert await identify(src, good) is not None  # the source still works afterwards
    await src.aclose()


async def test_leeway_allows_a_small_clock_skew(jwks: JWKSServer, key1: RSAKey) -> None:
    clock = Clock()
    jwks.keys = [key1.as_dict(private=False)]
    src = source(jwks, clock, leeway=30)
    token = sign(key1, clock, exp=int(clock()) + 10)
    clock.advance(35)
    assert await identify(src, token) is not None
    clock.advance(10)
    assert await identify(src, token) is None
    await src.aclose()


async def test_jwks_unreachable_is_a_503_and_a_stale_set_is_kept(
    jwks: JWKSServer, key1: RSAKey
) -> None:
    clock = Clock()
    jwks.keys = [key1.as_dict(private=False)]
    jwks.status = 500
    src = source(jwks, clock)
    with pytest.raises(IdentityProviderUnavailable):
        await identify(src, sign(key1, clock))
    jwks.status = 200
    assert await identify(src, sign(key1, clock)) is not None
    jwks.status = 500
    clock.advance(7200)  # the cached set is old, the provider is failing: keep using it
    assert await identify(src, sign(key1, clock)) is not None
    await src.aclose()


async def test_token_endpoint_with_a_jwt_login(
    make_app: Callable[..., Quart], jwks: JWKSServer, key1: RSAKey, clock: Clock
) -> None:
    jwks.keys = [key1.as_dict(private=False)]
    app = make_app(settings_for(jwks))
    async with app.test_app():
        client = app.test_client()
        client.set_cookie("localhost", "id_token", sign(key1, clock, alg="RS256")[:-4] + "AAAA")
        refused = await client.get("/request_tokens")
        assert refused.status_code == 401
        assert (await refused.get_json())["error"] == "login_required"
        client.set_cookie("localhost", "id_token", sign(key1, clock))
        admitted = await client.get("/request_tokens")
        assert admitted.status_code == 200, await admitted.get_data()
        jwks.status = 503
        clock.advance(JWKS_MIN_REFETCH)
        client.set_cookie("localhost", "id_token", sign(rsa("key-9"), clock))
        down = await client.get("/request_tokens")  # unknown kid, refetch fails: stale set
        assert down.status_code == 401


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithms": []}, "algorithms: not set"),
        ({"algorithms": ["none"]}, "'none' is not allowed"),
        ({"algorithms": ["HS256"]}, "'HS256' is not allowed"),
        ({"audience": ""}, "audience: not set"),
        ({"issuer": ""}, "issuer: not set"),
        ({"header": "Authorization"}, "exactly one of"),
        ({"cookie": "", "header": "X-Token"}, 'only "Authorization"'),
        ({"jwks_url": "http://idp.example.com/jwks"}, "must be https"),
    ],
)
def test_jwt_settings_refuse_unsafe_choices(
    jwks: JWKSServer, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_for(jwks, **change)


async def test_a_token_for_several_audiences_one_of_them_ours(
    jwks: JWKSServer, key1: RSAKey
) -> None:
    clock = Clock()
    jwks.keys = [key1.as_dict(private=False)]
    src = source(jwks, clock)
    assert (
        await identify(src, sign(key1, clock, aud=["https://other.example", AUDIENCE])) is not None
    )
    assert await identify(src, sign(key1, clock, aud=["https://other.example"])) is None
    await src.aclose()


async def test_concurrent_requests_share_one_jwks_fetch(
    jwks: JWKSServer, key1: RSAKey, key2: RSAKey
) -> None:
    clock = Clock()
    jwks.keys = [key1.as_dict(private=False), key2.as_dict(private=False)]
    src = source(jwks, clock)
    first = await asyncio.gather(*(identify(src, sign(key1, clock)) for _ in range(10)))
    assert all(identity is not None for identity in first)
    assert jwks.fetches == 1  # ten cold requests, one fetch
    clock.advance(JWKS_MIN_REFETCH)
    unknown = [sign(rsa(f"new-{i}"), clock) for i in range(2)]
    await asyncio.gather(*(identify(src, unknown[i % 2]) for i in range(10)))
    assert jwks.fetches == 2  # ten requests with unknown kids, one refetch
    await src.aclose()


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,  # nested beyond Python's stack
        b'{"keys": []}' + b" " * (600 * 1024),  # past the JWKS cap
    ],
    ids=["nested", "too-large"],
)
async def test_a_hostile_jwks_answer_is_a_503(jwks: JWKSServer, key1: RSAKey, raw: bytes) -> None:
    clock = Clock()
    jwks.raw = raw
    src = source(jwks, clock)
    with pytest.raises(IdentityProviderUnavailable):
        await identify(src, sign(key1, clock))
    await src.aclose()


async def test_a_failing_jwks_refetch_backs_off_and_keeps_the_cached_set(
    jwks: JWKSServer, key1: RSAKey
) -> None:
    clock = Clock()
    jwks.keys = [key1.as_dict(private=False)]
    src = source(jwks, clock)
    assert await identify(src, sign(key1, clock)) is not None
    jwks.status = 503
    clock.advance(JWKS_MAX_AGE + 1)
    for _ in range(3):  # the set is old and the provider down: asked once, the old set used
        assert await identify(src, sign(key1, clock)) is not None
    assert jwks.fetches == 2
    clock.advance(FETCH_BACKOFF)
    assert await identify(src, sign(key1, clock)) is not None
    assert jwks.fetches == 3  # asked again once the backoff is over
    jwks.status = 200
    clock.advance(2 * FETCH_BACKOFF)
    assert await identify(src, sign(key1, clock)) is not None
    assert await identify(src, sign(key1, clock)) is not None
    assert jwks.fetches == 4  # fresh again: cached
    await src.aclose()
