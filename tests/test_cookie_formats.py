"""Other frameworks' session cookies, minted by those frameworks' own libraries and verified
by the bridge: Django, Rails (both key digests, both envelopes), Auth.js, NextAuth v4 and
React Router. Express, whose session lives in Redis, is in test_example_express_site.py."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from quart import Quart, request

from bridge.errors import ConfigError
from bridge.identity import Identity
from bridge.identity.site_cookie import SiteCookieSource
from bridge.settings import report as config_report
from bridge.settings.loader import load_settings
from bridge.settings.schema import Settings
from support.config import TEST_ENV, base_config
from support.cookie_formats import django_cookie, node_mint, rails_mint

KEY = "the-sites-own-secret-key-0123456789"
OLD = "the-sites-older-secret-key-9876543210"
OTHER = "somebody-elses-secret-key-5555555555"
RAILS_COOKIE = "_shop_session"


def settings_for(cookie: dict[str, Any], keys: str = KEY, *, https: bool = False) -> Settings:
    config = base_config()
    config["login"] = {"cookie": {"login_url": "/login?next={next}", **cookie}}
    if https:
        config["server"]["public_url"] = "https://shop.example.com"
        config["session"]["cookie_secure"] = True
    return load_settings(None, {**TEST_ENV, "SITE_SECRET_KEY": keys}, overrides=config)


def source(
    cookie: dict[str, Any], keys: str = KEY, clock: Callable[[], float] = time.time
) -> SiteCookieSource:
    site = settings_for(cookie, keys).site_cookie
    assert site is not None
    return SiteCookieSource(site, clock=clock)


def later(seconds: float) -> Callable[[], float]:
    return lambda: time.time() + seconds


async def identify(src: SiteCookieSource, cookies: dict[str, str]) -> Identity | None:
    """Ask the source about a request that carries ``cookies`` in its Cookie header."""
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    async with Quart(__name__).test_request_context("/", headers={"Cookie": header}):
        return await src.identify(request)


def tamper(value: str, at: int = 10) -> str:
    swapped = "A" if value[at] != "A" else "B"
    return value[:at] + swapped + value[at + 1 :]


MALFORMED = ["x", "a.b", "a:b:c", "--", "....", "%zz", "é" * 10, "s%3A", "eyJ.eyJ.."]


# --- Django ---------------------------------------------------------------------------------

DJANGO = {"format": "django", "claim_fields": ["email"]}


def django_session(user: str = "42", **more: Any) -> dict[str, Any]:
    backend = "django.contrib.auth.backends.ModelBackend"
    return {
        "_auth_user_id": user,
        "_auth_user_backend": backend,
        "_auth_user_hash": "f" * 9,
        **more,
    }


async def test_django_signed_cookie_session_is_accepted() -> None:
    value = django_cookie(django_session(email="a@example.com"), KEY)
    identity = await identify(source(DJANGO), {"sessionid": value})
    assert identity is not None and identity.subject == "42"
    assert dict(identity.claims) == {"email": "a@example.com"}


async def test_django_compressed_session_is_accepted() -> None:
    value = django_cookie(django_session(cart=["kettle"] * 200), KEY)
    assert value.startswith(".")  # Django compressed it
    identity = await identify(source(DJANGO), {"sessionid": value})
    assert identity is not None and identity.subject == "42"


async def test_django_key_rotation_accepts_the_fallback_key() -> None:
    old_cookie = django_cookie(django_session(), OLD)
    assert await identify(source(DJANGO, f"{KEY},{OLD}"), {"sessionid": old_cookie}) is not None
    assert await identify(source(DJANGO, KEY), {"sessionid": old_cookie}) is None
    # A site that moved OLD into SECRET_KEY_FALLBACKS signs with KEY: both ends agree.
    new_cookie = django_cookie(django_session(), KEY, fallbacks=(OLD,))
    assert await identify(source(DJANGO, f"{KEY},{OLD}"), {"sessionid": new_cookie}) is not None


async def test_django_session_older_than_max_age_is_refused() -> None:
    value = django_cookie(django_session(), KEY)
    cookie = {**DJANGO, "max_age": 600}
    assert await identify(source(cookie, clock=later(590)), {"sessionid": value}) is not None
    assert await identify(source(cookie, clock=later(610)), {"sessionid": value}) is None


async def test_django_value_signed_for_another_purpose_is_refused() -> None:
    from django.core import signing

    django_cookie({}, KEY)  # configures Django
    other = signing.dumps(django_session(), key=KEY, salt="django.core.signing", compress=True)
    assert await identify(source(DJANGO), {"sessionid": other}) is None


@pytest.mark.parametrize("mangle", ["tamper", "wrong_key", "oversized", "malformed"])
async def test_django_bad_values_are_refused(mangle: str) -> None:
    good = django_cookie(django_session(), KEY)
    values = {
        "tamper": [tamper(good, 5), tamper(good, len(good) - 3), good.replace(":", ";", 1)],
        "wrong_key": [django_cookie(django_session(), OTHER)],
        "oversized": [good + "A" * 5000],
        "malformed": MALFORMED,
    }[mangle]
    for value in values:
        assert await identify(source(DJANGO), {"sessionid": value}) is None


# --- Rails ----------------------------------------------------------------------------------

SECRET_KEY_BASE = "a" * 64 + "0123456789abcdef" * 4
OLD_KEY_BASE = "b" * 128


def rails_job(
    session: dict[str, Any] | None = None,
    *,
    digest: str = "sha256",
    envelope: str = "legacy",
    key: str = SECRET_KEY_BASE,
    purpose: str | None = f"cookie.{RAILS_COOKIE}",
    expires_in: int | None = None,
) -> dict[str, Any]:
    return {
        "secret_key_base": key,
        "digest": digest,
        "session": session or {"session_id": "abc", "warden.user.user.key": [[42], "$2a$salt"]},
        "envelope": envelope,
        "purpose": purpose,
        "expires_in": expires_in,
    }


def rails(digest: str = "sha256", keys: str = SECRET_KEY_BASE, **kw: Any) -> SiteCookieSource:
    cookie = {"format": "rails", "name": RAILS_COOKIE, "key_digest": digest,
              "user_field": "/warden.user.user.key"}  # fmt: skip
    return source(cookie, keys, **kw)


@pytest.mark.parametrize("digest", ["sha256", "sha1"])
@pytest.mark.parametrize("envelope", ["legacy", "data"])
async def test_rails_encrypted_session_cookie_is_accepted(digest: str, envelope: str) -> None:
    [value] = rails_mint(rails_job(digest=digest, envelope=envelope))
    identity = await identify(rails(digest), {RAILS_COOKIE: value})
    # Devise keeps [[id], salt]: the first scalar, depth first, as a string.
    assert identity is not None and identity.subject == "42"
    other_digest = "sha1" if digest == "sha256" else "sha256"
    assert await identify(rails(other_digest), {RAILS_COOKIE: value}) is None


async def test_rails_plain_user_id_and_key_rotation() -> None:
    [value] = rails_mint(rails_job({"user_id": 7}, key=OLD_KEY_BASE))
    cookie = {"format": "rails", "name": RAILS_COOKIE}
    rotated = source(cookie, f"{SECRET_KEY_BASE},{OLD_KEY_BASE}")
    identity = await identify(rotated, {RAILS_COOKIE: value})
    assert identity is not None and identity.subject == "7"
    assert await identify(source(cookie, SECRET_KEY_BASE), {RAILS_COOKIE: value}) is None


@pytest.mark.parametrize("envelope", ["legacy", "data"])
async def test_rails_expired_message_is_refused(envelope: str) -> None:
    [value] = rails_mint(rails_job(envelope=envelope, expires_in=60))
    assert await identify(rails(clock=later(30)), {RAILS_COOKIE: value}) is not None
    assert await identify(rails(clock=later(61)), {RAILS_COOKIE: value}) is None


@pytest.mark.parametrize("envelope", ["legacy", "data"])
async def test_rails_message_for_another_purpose_or_none_is_refused(envelope: str) -> None:
    foreign, bare = rails_mint(
        rails_job(envelope=envelope, purpose="cookie.remember_token"),
        rails_job(envelope="legacy", purpose=None),  # no envelope at all: names no purpose
    )
    assert await identify(rails(), {RAILS_COOKIE: foreign}) is None
    assert await identify(rails(), {RAILS_COOKIE: bare}) is None


@pytest.mark.parametrize("mangle", ["tamper", "wrong_key", "oversized", "malformed"])
async def test_rails_bad_values_are_refused(mangle: str) -> None:
    good, wrong = rails_mint(rails_job(), rails_job(key=OLD_KEY_BASE))
    values = {
        "tamper": [tamper(good, 3), tamper(good, len(good) - 8), good.replace("--", "-", 1)],
        "wrong_key": [wrong],
        "oversized": [good + "A" * 5000],
        "malformed": MALFORMED,
    }[mangle]
    for value in values:
        assert await identify(rails(), {RAILS_COOKIE: value}) is None


def test_rails_needs_a_cookie_name_and_a_known_digest() -> None:
    with pytest.raises(ConfigError, match="login.cookie.name"):
        settings_for({"format": "rails"})
    with pytest.raises(ConfigError, match="key_digest"):
        settings_for({"format": "rails", "name": RAILS_COOKIE, "key_digest": "md5"})
    with pytest.raises(ConfigError, match="login.cookie.key_digest: not a setting"):
        settings_for({"format": "django", "key_digest": "sha1"})


# --- Auth.js v5 and NextAuth v4 ---------------------------------------------------------------

AUTHJS = "authjs.session-token"
NEXTAUTH = "next-auth.session-token"


def authjs_job(token: dict[str, Any] | None = None, *, secret: str = KEY, salt: str = AUTHJS,
               max_age: int = 3600) -> dict[str, Any]:  # fmt: skip
    return {"kind": "authjs", "token": token or {"sub": "user-1", "email": "a@example.com"},
            "secret": secret, "salt": salt, "maxAge": max_age}  # fmt: skip


def nextauth_job(token: dict[str, Any] | None = None, *, secret: str = KEY,
                 max_age: int = 3600) -> dict[str, Any]:  # fmt: skip
    return {"kind": "next-auth-v4", "token": token or {"sub": "user-2", "email": "b@example.com"},
            "secret": secret, "maxAge": max_age}  # fmt: skip


@pytest.fixture(scope="module")
def minted() -> dict[str, dict[str, Any]]:
    """Every Node-minted value these tests use, from one run of the libraries."""
    names = ["authjs", "authjs_old", "authjs_other", "authjs_secure_salt", "authjs_big",
             "authjs_short", "v4", "v4_old", "v4_other", "v4_short", "v4_big"]  # fmt: skip
    jobs = [
        authjs_job(),
        authjs_job(secret=OLD),
        authjs_job(secret=OTHER),
        authjs_job(salt="__Secure-" + AUTHJS),
        authjs_job({"sub": "user-1", "picture": "p" * 6000}),
        authjs_job(max_age=60),
        nextauth_job(),
        nextauth_job(secret=OLD),
        nextauth_job(secret=OTHER),
        nextauth_job(max_age=60),
        nextauth_job({"sub": "user-2", "picture": "p" * 6000}),
        {"kind": "react-router", "data": {"userId": 5, "name": "Zoë"}, "secrets": [KEY],
         "name": "__session"},
        {"kind": "react-router", "data": {"userId": "u-9"}, "secrets": [OLD], "name": "__session"},
        {"kind": "react-router", "data": {"userId": 5}, "secrets": [OTHER], "name": "__session"},
    ]  # fmt: skip
    names += ["rr", "rr_old", "rr_other"]
    return dict(zip(names, node_mint(*jobs), strict=True))


async def test_authjs_session_cookie_is_accepted(minted: dict[str, Any]) -> None:
    identity = await identify(
        source({"format": "authjs", "claim_fields": ["email"]}), {AUTHJS: minted["authjs"]["value"]}
    )
    assert identity is not None and identity.subject == "user-1"
    assert dict(identity.claims) == {"email": "a@example.com"}


async def test_authjs_chunked_cookies_are_reassembled(minted: dict[str, Any]) -> None:
    chunks = minted["authjs_big"]["cookies"]
    assert sorted(chunks) == [f"{AUTHJS}.{i}" for i in range(len(chunks))] and len(chunks) > 1
    identity = await identify(source({"format": "authjs"}), chunks)
    assert identity is not None and identity.subject == "user-1"
    missing_last = {f"{AUTHJS}.{i}": chunks[f"{AUTHJS}.{i}"] for i in range(len(chunks) - 1)}
    assert await identify(source({"format": "authjs"}), missing_last) is None


async def test_authjs_secret_rotation(minted: dict[str, Any]) -> None:
    cookies = {AUTHJS: minted["authjs_old"]["value"]}
    assert await identify(source({"format": "authjs"}, f"{KEY},{OLD}"), cookies) is not None
    assert await identify(source({"format": "authjs"}, KEY), cookies) is None


async def test_authjs_expiry_is_honoured_with_its_tolerance(minted: dict[str, Any]) -> None:
    cookies = {AUTHJS: minted["authjs_short"]["value"]}
    assert await identify(source({"format": "authjs"}, clock=later(70)), cookies) is not None
    assert await identify(source({"format": "authjs"}, clock=later(80)), cookies) is None


async def test_authjs_key_is_bound_to_the_cookie_name(minted: dict[str, Any]) -> None:
    secure = "__Secure-" + AUTHJS
    site = settings_for({"format": "authjs"}, https=True).site_cookie
    assert site is not None and site.name == secure  # the name Auth.js uses over https
    value = minted["authjs_secure_salt"]["value"]
    assert await identify(SiteCookieSource(site), {secure: value}) is not None
    # The same value under the plain name was not made for that cookie: another purpose.
    assert await identify(source({"format": "authjs"}), {AUTHJS: value}) is None


async def test_next_auth_v4_session_cookie_is_accepted(minted: dict[str, Any]) -> None:
    cookie = {"format": "next-auth-v4", "claim_fields": ["email"]}
    identity = await identify(source(cookie), {NEXTAUTH: minted["v4"]["value"]})
    assert identity is not None and identity.subject == "user-2"
    assert dict(identity.claims) == {"email": "b@example.com"}
    old = {NEXTAUTH: minted["v4_old"]["value"]}
    assert await identify(source(cookie, f"{KEY},{OLD}"), old) is not None
    assert await identify(source(cookie, KEY), old) is None
    short = {NEXTAUTH: minted["v4_short"]["value"]}
    assert await identify(source(cookie, clock=later(70)), short) is not None
    assert await identify(source(cookie, clock=later(80)), short) is None


async def test_next_auth_v4_chunked_cookies_are_reassembled(minted: dict[str, Any]) -> None:
    chunks = minted["v4_big"]["cookies"]
    assert sorted(chunks) == [f"{NEXTAUTH}.{i}" for i in range(len(chunks))] and len(chunks) > 1
    identity = await identify(source({"format": "next-auth-v4"}), chunks)
    assert identity is not None and identity.subject == "user-2"


async def test_one_nextjs_format_refuses_the_others_cookie(minted: dict[str, Any]) -> None:
    v4 = source({"format": "next-auth-v4"})
    assert await identify(v4, {NEXTAUTH: minted["authjs"]["value"]}) is None
    assert await identify(source({"format": "authjs"}), {AUTHJS: minted["v4"]["value"]}) is None


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}."


@pytest.mark.parametrize("fmt", ["authjs", "next-auth-v4"])
@pytest.mark.parametrize("mangle", ["tamper", "wrong_key", "alg_none", "oversized", "malformed"])
async def test_nextjs_bad_values_are_refused(minted: dict[str, Any], fmt: str, mangle: str) -> None:
    name, prefix = (AUTHJS, "authjs") if fmt == "authjs" else (NEXTAUTH, "v4")
    good = minted[prefix]["value"]
    values = {
        "tamper": [tamper(good, len(good) - 5), tamper(good, good.index("..") + 5), good[:-1]],
        "wrong_key": [minted[f"{prefix}_other"]["value"]],
        "alg_none": [_unsigned_jwt({"sub": "admin", "exp": int(time.time()) + 60})],
        "oversized": [good + "A" * 40000],
        "malformed": MALFORMED,
    }[mangle]
    for value in values:
        assert await identify(source({"format": fmt}), {name: value}) is None


# --- React Router -----------------------------------------------------------------------------


async def test_react_router_cookie_session_is_accepted(minted: dict[str, Any]) -> None:
    cookie = {"format": "react-router", "claim_fields": ["name"]}
    identity = await identify(source(cookie), {"__session": minted["rr"]["value"]})
    assert identity is not None and identity.subject == "5"  # numbers become their text
    assert dict(identity.claims) == {"name": "Zoë"}


async def test_react_router_secrets_rotate(minted: dict[str, Any]) -> None:
    cookies = {"__session": minted["rr_old"]["value"]}
    assert await identify(source({"format": "react-router"}, f"{KEY},{OLD}"), cookies) is not None
    assert await identify(source({"format": "react-router"}, KEY), cookies) is None


@pytest.mark.parametrize("mangle", ["tamper", "wrong_key", "oversized", "malformed"])
async def test_react_router_bad_values_are_refused(minted: dict[str, Any], mangle: str) -> None:
    good = minted["rr"]["value"]
    data, _, signature = good.rpartition(".")
    forged = base64.b64encode(b'{"userId":1}').decode() + "." + signature
    values = {
        "tamper": [tamper(good, 2), forged, data, data + "."],
        "wrong_key": [minted["rr_other"]["value"]],
        "oversized": [good + "A" * 5000],
        "malformed": MALFORMED,
    }[mangle]
    for value in values:
        assert await identify(source({"format": "react-router"}), {"__session": value}) is None


# --- through the token endpoint ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rails_values() -> list[str]:
    return rails_mint(rails_job({"user_id": 7}), rails_job({"user_id": 7}, key=OLD_KEY_BASE))


@pytest.mark.parametrize("fmt", ["django", "rails", "authjs", "next-auth-v4", "react-router"])
async def test_token_endpoint_admits_a_good_value_and_401s_a_bad_one(
    make_app: Callable[..., Quart], minted: dict[str, Any], rails_values: list[str], fmt: str
) -> None:
    cookie: dict[str, Any] = {"format": fmt}
    keys = KEY
    if fmt == "django":
        name = "sessionid"
        good, bad = django_cookie(django_session(), KEY), django_cookie(django_session(), OTHER)
    elif fmt == "rails":
        cookie["name"] = name = RAILS_COOKIE
        keys, (good, bad) = SECRET_KEY_BASE, rails_values
    elif fmt == "authjs":
        name, good, bad = AUTHJS, minted["authjs"]["value"], minted["authjs_other"]["value"]
    elif fmt == "next-auth-v4":
        name, good, bad = NEXTAUTH, minted["v4"]["value"], minted["v4_other"]["value"]
    else:
        name, good, bad = "__session", minted["rr"]["value"], minted["rr_other"]["value"]
    app = make_app(settings_for(cookie, keys), clock=time.time)  # the values are fresh now
    async with app.test_app():
        client = app.test_client()
        client.set_cookie("localhost", name, bad)
        refused = await client.get("/request_tokens")
        assert refused.status_code == 401
        assert (await refused.get_json())["error"] == "login_required"
        client.set_cookie("localhost", name, good)
        admitted = await client.get("/request_tokens")
        assert admitted.status_code == 200, await admitted.get_data()
        assert "accessToken" in (await admitted.get_json())["tokens"]
        # The site's logout (its cookie gone) ends the avatar session too.
        client.delete_cookie("localhost", name)
        assert (await client.get("/request_tokens")).status_code == 401


def test_check_config_masks_the_site_secret_and_explains_the_format() -> None:
    masked = config_report.masked(settings_for({"format": "django"}))
    assert KEY not in json.dumps(masked)
    assert masked["site_cookie"]["secret_keys"] == ["********"]
    assert "TimestampSigner" in masked["site_cookie"]["verified_as"]
    assert "salt" not in masked["site_cookie"] and masked["site_cookie"]["max_age"] == 1209600


def test_check_config_masks_the_express_store_password() -> None:
    url = "redis://:hunter2-store-password@127.0.0.1:6379/0"
    masked = config_report.masked(settings_for({"format": "express", "store_url": url}))
    assert "hunter2-store-password" not in json.dumps(masked)
    assert masked["site_cookie"]["store_url"] == "redis://:********@127.0.0.1:6379/0"
    with pytest.raises(ConfigError, match="login.cookie.store_url"):
        settings_for({"format": "express"})


@pytest.mark.parametrize(
    "url", ["redis+sentinel://127.0.0.1:26379/site", "redis+cluster://127.0.0.1:7000"]
)
def test_express_store_url_must_name_one_redis(url: str) -> None:
    with pytest.raises(ConfigError, match="login.cookie.store_url: must be redis://"):
        settings_for({"format": "express", "store_url": url})
