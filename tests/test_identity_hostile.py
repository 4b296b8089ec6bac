"""Hostile values, generated, for every site-cookie format and for JWT login: arbitrary bytes,
the format's own shape around arbitrary JSON headers and payloads, and JSON nested far beyond
Python's stack. Where a format authenticates before it parses (an HMAC, AES-GCM, a JWE, a JWS),
the hostile payload is also signed or encrypted with the site's real key, so it reaches the
parser. The property: each parser answers "not signed in" (None), never an exception.

Each format's ``read`` (or the JWT source's ``verify``) is called directly, not through
``SiteCookieSource.identify``, whose backstop would hide an exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import test_jwt_login
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer
from joserfc import jwe, jws
from joserfc.jwk import OctKey, RSAKey
from quart import Quart, request
from test_jwt_login import AUDIENCE, ISSUER, JWKSServer

from bridge.identity.cookie_formats import CookieFormat
from bridge.identity.cookie_formats.nextjs import authjs_key, next_auth_v4_key
from bridge.identity.jwt_login import JWTSource
from bridge.identity.site_cookie import SiteCookieSource
from bridge.settings.loader import load_settings
from support.app import Clock
from support.config import TEST_ENV, base_config
from support.cookie_formats import django_cookie
from support.redis import RedisServer

jwks = test_jwt_login.jwks  # the provider's JWKS endpoint on 127.0.0.1 (a fixture)

KEY = "the-sites-own-secret-key-0123456789"
COOKIE = "site_session"

HOSTILE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies --------------------------------------------------------------------------------

# Keys a format gives meaning to (Flask's tags, Rails' envelope, JOSE headers) beside any text.
KEYS = st.sampled_from(
    [" t", " u", " b", " m", " d", " di", "_rails", "message", "data", "pur", "exp", "nbf",
     "iat", "alg", "enc", "kid", "typ", "zip", "crit", "cookie", "expires", "user_id", "sub"]
) | st.text(max_size=8)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**310)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
)


def nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


# Hypothesis raises the recursion limit by a few thousand while a test runs: deeper than that.
DEPTHS = st.sampled_from([1500, 6000, 12000]) | st.integers(0, 12000)
DEEP = st.builds(nested, DEPTHS, st.sampled_from(["list", "dict"]))
# The text of a JSON object whose fields hold anything, nested JSON inside valid JSON included.
OBJECTS = st.dictionaries(KEYS, JSON, max_size=6).map(lambda d: json.dumps(d).encode())
PAYLOADS = OBJECTS | JSON.map(lambda v: json.dumps(v).encode()) | DEEP | st.binary(max_size=300)
# What a Cookie header delivers: text, or bytes read as latin-1.
RAW = st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1"))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def settings_for(cookie: dict[str, Any]) -> Any:
    config = base_config()
    config["login"] = {"cookie": {"login_url": "/login?next={next}", "name": COOKIE, **cookie}}
    return load_settings(None, {**TEST_ENV, "SITE_SECRET_KEY": KEY}, overrides=config)


def site(fmt: str, **cookie: Any) -> SiteCookieSource:
    settings = settings_for({"format": fmt, **cookie}).site_cookie
    assert settings is not None
    return SiteCookieSource(settings, clock=time.time)


def reader(fmt: str, **cookie: Any) -> CookieFormat:
    source = site(fmt, **cookie)
    assert source.format is not None
    return source.format


async def never_raises(fmt: CookieFormat, value: str) -> None:
    """Read ``value`` as the site's cookie: a session or None, never an exception."""
    session = await fmt.read({COOKIE: value})
    assert session is None or isinstance(session, Mapping)


# --- Flask and itsdangerous -------------------------------------------------------------------


def flask_signer() -> Any:
    app = Flask(__name__)
    app.secret_key = KEY
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    return serializer.make_signer(serializer.salt)


def itsdangerous_signer() -> Any:
    serializer = URLSafeTimedSerializer(KEY, salt="site-login")
    return serializer.make_signer(serializer.salt)


def itsdangerous_payload(payload: bytes, compress: bool) -> str:
    # itsdangerous's URL-safe mixin: base64 of the JSON, zlib-compressed behind a "." if asked.
    return "." + b64url(zlib.compress(payload)) if compress else b64url(payload)


@HOSTILE
@given(value=RAW, payload=PAYLOADS, compress=st.booleans(), signed=st.booleans())
@pytest.mark.parametrize("fmt", ["flask", "itsdangerous"])
def test_flask_and_itsdangerous_never_raise(
    fmt: str, value: str, payload: bytes, compress: bool, signed: bool
) -> None:
    source = site(fmt) if fmt == "flask" else site(fmt, salt="site-login")
    signer = flask_signer() if fmt == "flask" else itsdangerous_signer()
    source.identity_of(value)
    if signed:
        token = signer.sign(itsdangerous_payload(payload, compress)).decode()
        source.identity_of(token)


# --- Django ------------------------------------------------------------------------------------

DJANGO_SALT = "django.contrib.sessions.backends.signed_cookies"


def django_signed(payload: bytes, compress: bool) -> str:
    from django.core import signing

    django_cookie({}, KEY)  # configures Django once
    value = "." + b64url(zlib.compress(payload)) if compress else b64url(payload)
    return signing.TimestampSigner(key=KEY, salt=DJANGO_SALT, fallback_keys=[]).sign(value)


@HOSTILE
@given(value=RAW, payload=PAYLOADS, compress=st.booleans())
async def test_django_never_raises(value: str, payload: bytes, compress: bool) -> None:
    fmt = reader("django")
    await never_raises(fmt, value)
    await never_raises(fmt, django_signed(payload, compress))


# --- Rails -------------------------------------------------------------------------------------


def rails_encrypted(plaintext: bytes) -> str:
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=b"authenticated encrypted cookie",
        iterations=1000,
    )  # fmt: skip
    iv = os.urandom(12)
    sealed = AESGCM(kdf.derive(KEY.encode())).encrypt(iv, plaintext, None)
    return f"{b64(sealed[:-16])}--{b64(iv)}--{b64(sealed[-16:])}"


RAILS_PLAINTEXTS = (
    PAYLOADS
    | st.fixed_dictionaries(
        {"pur": st.just(f"cookie.{COOKIE}") | JSON},
        optional={"message": JSON | PAYLOADS.map(b64), "data": JSON | OBJECTS.map(bytes.decode),
                  "exp": JSON},
    ).map(lambda meta: json.dumps({"_rails": meta}).encode())
)  # fmt: skip


@HOSTILE
@given(value=RAW, plaintext=RAILS_PLAINTEXTS)
async def test_rails_never_raises(value: str, plaintext: bytes) -> None:
    fmt = reader("rails")
    await never_raises(fmt, value)
    await never_raises(fmt, rails_encrypted(plaintext))


# --- React Router ------------------------------------------------------------------------------


@HOSTILE
@given(value=RAW, payload=PAYLOADS)
async def test_react_router_never_raises(value: str, payload: bytes) -> None:
    fmt = reader("react-router")
    await never_raises(fmt, value)
    data = b64(payload)
    mac = hmac.new(KEY.encode(), data.encode(), hashlib.sha256).digest()
    await never_raises(fmt, f"{data}.{b64(mac).rstrip('=')}")


# --- Express -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("express-redis"))).start()
    yield server
    server.stop()


def express_cookie(sid: str) -> str:
    mac = hmac.new(KEY.encode(), sid.encode(), hashlib.sha256).digest()
    return "s%3A" + sid + "." + b64(mac).rstrip("=").replace("+", "%2B").replace("/", "%2F")


@HOSTILE
@given(value=RAW, session=PAYLOADS | OBJECTS)
async def test_express_never_raises(site_redis: RedisServer, value: str, session: bytes) -> None:
    fmt = reader("express", store_url=site_redis.url)
    try:
        await never_raises(fmt, value)
        # A correctly signed id whose session in the site's Redis is hostile JSON.
        await fmt.redis.set("sess:hostile", session)  # type: ignore[attr-defined]
        await never_raises(fmt, express_cookie("hostile"))
    finally:
        await fmt.aclose()


# --- Auth.js and NextAuth v4 -------------------------------------------------------------------


def header_text(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()


# A header of the right shape whose fields hold any JSON (where the measured 500s were), one
# with optional fields of any JSON, hostile JSON text, and nesting beyond the stack.
JWE_HEADERS = st.one_of(
    st.fixed_dictionaries({"alg": st.just("dir"), "enc": JSON}).map(header_text),
    st.fixed_dictionaries(
        {"alg": st.just("dir"), "enc": st.sampled_from(["A256CBC-HS512", "A256GCM"])},
        optional={"kid": JSON, "zip": JSON, "crit": JSON, "cty": JSON, "typ": JSON},
    ).map(header_text),
    st.fixed_dictionaries({"alg": JSON, "enc": JSON}).map(header_text),
    DEEP,
    PAYLOADS,
)
SEGMENT = st.binary(max_size=64).map(b64url) | st.text(max_size=20)


@HOSTILE
@example(value="", header=b'{"alg":"dir","enc":[1]}', segments=["a"] * 4, plaintext=b"{}",
         enc="A256GCM")  # fmt: skip
@example(value="", header=nested(12000, "list"), segments=["a"] * 4, plaintext=b"{}", enc="A256GCM")
@given(
    value=RAW,
    header=JWE_HEADERS,
    segments=st.lists(SEGMENT, min_size=4, max_size=4),
    plaintext=PAYLOADS,
    enc=st.sampled_from(["A256CBC-HS512", "A256GCM"]),
)
@pytest.mark.parametrize("variant", ["authjs", "next-auth-v4"])
async def test_nextjs_never_raises(
    variant: str, value: str, header: bytes, segments: list[str], plaintext: bytes, enc: str
) -> None:
    fmt = reader(variant)
    await never_raises(fmt, value)
    await never_raises(fmt, ".".join([b64url(header), *segments]))
    # Encrypted with the site's real key, so the hostile plaintext reaches the parser.
    if variant == "authjs":
        raw = authjs_key(KEY, COOKIE, enc)
    else:
        raw, enc = next_auth_v4_key(KEY), "A256GCM"
    registry = jwe.JWERegistry(algorithms=["dir", enc])
    token = jwe.encrypt_compact({"alg": "dir", "enc": enc}, plaintext, OctKey.import_key(raw),
                                registry=registry)  # fmt: skip
    await never_raises(fmt, token)


# --- JWT login ---------------------------------------------------------------------------------

JWS_HEADERS = st.one_of(
    st.fixed_dictionaries({"alg": JSON}, optional={"kid": JSON}).map(header_text),
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["RS256", "ES256", "EdDSA", "none", "HS256"])},
        optional={"kid": st.just("key-1") | JSON, "crit": JSON, "typ": JSON, "b64": JSON,
                  "jku": JSON, "x5c": JSON, "jwk": JSON},
    ).map(header_text),
    DEEP,
    PAYLOADS,
)  # fmt: skip


@pytest.fixture(scope="module")
def jwt_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "key-1", "use": "sig"})


@HOSTILE
@given(
    value=RAW,
    header=JWS_HEADERS,
    payload=PAYLOADS,
    signature=st.binary(max_size=300),
    extra=st.dictionaries(KEYS, JSON, max_size=4),
)
async def test_jwt_login_never_raises(
    jwks: JWKSServer,
    jwt_key: RSAKey,
    value: str,
    header: bytes,
    payload: bytes,
    signature: bytes,
    extra: dict[str, Any],
) -> None:
    jwks.keys = [jwt_key.as_dict(private=False)]
    settings = settings_jwt(jwks)
    source = JWTSource(settings, clock=Clock())
    try:
        await source.verify(value)
        await source.verify(f"{b64url(header)}.{b64url(payload)}.{b64url(signature)}")
        # Signed with the provider's real key: hostile claims and odd header fields.
        signed_header = {"alg": "RS256", "kid": "key-1", **extra}
        try:
            token = jws.serialize_compact(signed_header, payload, jwt_key)
        except Exception:  # noqa: BLE001 - joserfc refuses to sign some headers: nothing to test
            token = jws.serialize_compact({"alg": "RS256", "kid": "key-1"}, payload, jwt_key)
        await source.verify(token)
    finally:
        await source.aclose()


def settings_jwt(server: JWKSServer) -> Any:
    config = base_config()
    config["login"] = {
        "jwt": {
            "jwks_url": server.url,
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "algorithms": ["RS256", "ES256", "EdDSA"],
            "cookie": "id_token",
            "login_url": "https://shop.example.com/login?next={next}",
        }
    }
    settings = load_settings(None, TEST_ENV, overrides=config).jwt
    assert settings is not None
    return settings


# --- through the app ----------------------------------------------------------------------------

AUTHJS = "authjs.session-token"
# The measured 500s: a protected header whose "enc" is a list (39 bytes of cookie), and one
# nested 1,500 levels deep.
CRAFTED_AUTHJS = [
    b64url(b'{"alg":"dir","enc":[1]}') + ".a.b.c.d",
    b64url(b"[" * 1500 + b"]" * 1500) + ".a.b.c.d",
]


def client_at(ip: str) -> dict[str, Any]:
    return {"scope_base": {"client": (ip, 50000)}}


async def test_crafted_authjs_cookies_are_401s_counted_per_address(
    make_app: Callable[..., Quart], caplog: pytest.LogCaptureFixture
) -> None:
    config = base_config()
    config["login"] = {"cookie": {"format": "authjs", "login_url": "/login?next={next}"}}
    config["limits"] = {"per_ip": "2/minute", "per_session": "off"}
    app = make_app(load_settings(None, {**TEST_ENV, "SITE_SECRET_KEY": KEY}, overrides=config))
    async with app.test_app():
        statuses = []
        for value in [*CRAFTED_AUTHJS, CRAFTED_AUTHJS[0]]:
            client = app.test_client()
            client.set_cookie("localhost", AUTHJS, value)
            response = await client.get("/request_tokens", **client_at("198.51.100.7"))
            statuses.append(response.status_code)
            if response.status_code == 401:
                assert (await response.get_json())["error"] == "login_required"
    assert statuses == [401, 401, 429]  # each refusal counted: the third is over the limit
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The parser itself refused them: the backstop for what it did not foresee was not needed.
    assert not [r for r in caplog.records if r.name == "bridge.site_cookie"]


class BrokenFormat:
    """A cookie format with a bug no check foresaw: its read raises, quoting the cookie."""

    async def read(self, cookies: Mapping[str, str]) -> Mapping[str, Any] | None:
        raise ValueError(f"cannot parse {cookies.get(COOKIE)}")

    async def aclose(self) -> None:
        return None


async def test_a_format_that_raises_is_not_signed_in_and_logs_the_type_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = site("django")
    source.format = BrokenFormat()
    secret_value = "cookie-value-that-must-not-be-logged"
    async with Quart(__name__).test_request_context(
        "/", headers={"Cookie": f"{COOKIE}={secret_value}"}
    ):
        with caplog.at_level(logging.WARNING, logger="bridge.site_cookie"):
            assert await source.identify(request) is None
    warnings = [r for r in caplog.records if r.name == "bridge.site_cookie"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert warnings[0].__dict__["fields"]["error"] == "ValueError"
    assert secret_value not in caplog.text and secret_value not in str(warnings[0].__dict__)
