"""The site's own signed cookie: Flask sessions and plain itsdangerous tokens."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from itsdangerous import URLSafeTimedSerializer

from bridge.identity.site_cookie import SiteCookieSource
from bridge.secret import Secret
from bridge.settings.schema import FlaskCookie, ItsdangerousCookie

KEY = "the-sites-own-secret-key-0123456789"


def source(
    fmt: str = "flask",
    keys: tuple[str, ...] = (KEY,),
    clock: Callable[[], float] = time.time,
    **kwargs: Any,
) -> SiteCookieSource:
    values: dict[str, Any] = {
        "name": "session",
        "secret_key_env": "SITE_SECRET_KEY",
        "secret_keys": tuple(Secret(k) for k in keys),
        "salt": "cookie-session" if fmt == "flask" else "itsdangerous",
        "max_age": 3600,
        "user_field": "user_id",
        "login_url": "/login?next={next}",
        "claim_fields": ("email", "groups"),
    }
    values.update(kwargs)
    kind = {"flask": FlaskCookie, "itsdangerous": ItsdangerousCookie}[fmt]
    return SiteCookieSource(kind(**values), clock=clock)


def flask_cookie(payload: dict[str, Any], key: str = KEY) -> str:
    """Let a real Flask app sign its session cookie, exactly as a site would."""
    app = Flask("site")
    app.secret_key = key
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    return str(serializer.dumps(payload))


def test_real_flask_session_cookie_is_accepted() -> None:
    cookie = flask_cookie(
        {"user_id": 42, "email": "a@example.com", "groups": ["customers"], "other": 1}
    )
    identity = source().identity_from_payload(source().read(cookie))
    assert identity is not None
    assert identity.subject == "42" and identity.method == "site_cookie"
    assert dict(identity.claims) == {"email": "a@example.com", "groups": ["customers"]}


def test_flask_tagged_values_are_understood() -> None:
    # Flask tags tuples, bytes and datetimes; a site's session may hold any of them.
    cookie = flask_cookie({"_user_id": "7", "cart": ("a", "b"), "blob": b"\x00\x01"})
    payload = source(user_field="_user_id").read(cookie)
    assert payload is not None and payload["cart"] == ("a", "b")
    assert source(user_field="_user_id").identity_from_payload(payload).subject == "7"  # type: ignore[union-attr]


def test_plain_itsdangerous_token_is_accepted() -> None:
    token = URLSafeTimedSerializer(KEY, salt="itsdangerous").dumps({"user_id": "u1"})
    identity = source("itsdangerous").identity_from_payload(source("itsdangerous").read(str(token)))
    assert identity is not None and identity.subject == "u1"


def test_key_rotation_accepts_old_and_new_keys() -> None:
    old, new = "old-site-key-0123456789abcdef", "new-site-key-0123456789abcdef"
    rotated = source(keys=(new, old))
    assert rotated.read(flask_cookie({"user_id": 1}, old)) is not None
    assert rotated.read(flask_cookie({"user_id": 1}, new)) is not None
    assert source(keys=(new,)).read(flask_cookie({"user_id": 1}, old)) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # signature tampered
        lambda c: "x" + c,  # payload tampered
        lambda c: c.split(".")[0],  # signature stripped
        lambda c: "",
        lambda c: "." * 10,
        lambda c: c + "." + "A" * 5000,  # oversized
    ],
)
def test_tampered_cookies_are_refused(mangle: Any) -> None:
    cookie = flask_cookie({"user_id": 1})
    assert source().read(mangle(cookie)) is None


def test_cookie_signed_with_another_key_is_refused() -> None:
    assert source().read(flask_cookie({"user_id": 1}, "some-other-key-0123456789")) is None


def test_expired_cookie_is_refused() -> None:
    cookie = flask_cookie({"user_id": 1})
    later = time.time() + 3601
    assert source().read(cookie) is not None
    assert source(clock=lambda: later).read(cookie) is None


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"user_id": ""},
        {"user_id": None},
        {"user_id": True},
        {"user_id": [{"id": "a"}, []]},  # a list yields its first scalar; this one has none
        {"user_id": "x" * 300},
    ],
)
def test_cookie_without_a_usable_user_is_not_a_login(payload: dict[str, Any]) -> None:
    src = source()
    assert src.identity_from_payload(src.read(flask_cookie(payload))) is None


def test_login_url_puts_next_in_place() -> None:
    assert source().login_url("/avatars/a b") == "/login?next=/avatars/a%20b"
