"""What ``sentifyd-bridge check-config`` shows: the effective settings, every secret masked."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import msgspec

from bridge.secret import Secret
from bridge.settings.schema import ExpressCookie, Settings
from bridge.settings.values import AccessRules, RateLimit


def masked(settings: Settings) -> dict[str, Any]:
    """Return the effective settings as plain data, every secret masked (``check-config``)."""
    plain: dict[str, Any] = {
        "secret_keys": _plain(settings.secret_keys),
        "avatars": _plain(settings.avatars),
        **{name: _plain(getattr(settings, name)) for name in _MASKED_SECTIONS},
        "site_cookie": _plain(settings.site_cookie),
        "log_level": settings.log_level,
        "demo": settings.demo,
        "source": settings.source,
        **{name: _plain(getattr(settings, name)) for name in _MASKED_OPERATIONS},
        # The operators' names only: the tokens are not held, and their hashes are not shown.
        "admin_tokens": [token.name for token in settings.admin_tokens],
        "metrics_token": _plain(settings.metrics_token),
        "oidc": _plain(settings.oidc),
        "session_check": _plain(settings.session_check),
        "jwt": _plain(settings.jwt),
    }
    plain["store"]["url"] = masked_url(settings.store.url)
    if settings.site_cookie is not None:
        fmt = settings.site_cookie.format
        plain["site_cookie"] = cookie = {"format": fmt, **plain["site_cookie"]}
        if isinstance(settings.site_cookie, ExpressCookie):
            cookie["store_url"] = masked_url(settings.site_cookie.store_url)
        cookie["verified_as"] = COOKIE_FORMAT_NOTES[fmt]
    if plain["jwt"]:
        plain["jwt"]["verified_as"] = JWT_NOTE
    return plain


_MASKED_SECTIONS = ("server", "session", "store", "sentifyd", "component")
_MASKED_OPERATIONS = ("lifecycle", "limits", "metrics", "admin")


def _plain(value: Any) -> Any:
    """Plain data for ``masked``: structs by attribute name, secrets masked."""
    if isinstance(value, Secret):
        return "********" if value else ""
    if isinstance(value, AccessRules):
        return msgspec.to_builtins(value)  # the rules given, not the others' None
    if isinstance(value, RateLimit):
        return {"count": value.count, "window": value.window}
    if isinstance(value, msgspec.Struct):
        return {name: _plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def masked_url(url: str) -> str:
    """Mask the password of a URL such as ``redis://:password@host:6379/0``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username or ''}:********@{host}").geturl()


# What check-config says each format checks (and which settings it reads).
COOKIE_FORMAT_NOTES = {
    "flask": "Flask's session cookie: itsdangerous, salt, HMAC-SHA1, tagged JSON; max_age",
    "itsdangerous": "an itsdangerous URLSafeTimedSerializer token: salt, max_age",
    "django": "Django's signed_cookies session: TimestampSigner HMAC-SHA256 under SECRET_KEY and "
    "its fallbacks, salt django.contrib.sessions.backends.signed_cookies, max_age "
    "(SESSION_COOKIE_AGE)",
    "rails": "Rails' encrypted cookie: AES-256-GCM, key by PBKDF2 of secret_key_base (salt "
    "'authenticated encrypted cookie', 1000 iterations, key_digest), purpose cookie.<name>, exp",
    "express": "express-session's signed id (HMAC-SHA256, cookie-signature) and the session "
    "connect-redis keeps at store_prefix + id in store_url; missing there means signed out",
    "authjs": "Auth.js v5's JWE (dir + A256CBC-HS512, HKDF key from AUTH_SECRET salted with the "
    "cookie name), chunked cookies joined, exp with 15 s tolerance",
    "next-auth-v4": "NextAuth v4's JWE (dir + A256GCM, HKDF key from NEXTAUTH_SECRET), chunked "
    "cookies joined, exp with 15 s tolerance",
    "react-router": "React Router / Remix createCookieSessionStorage: base64 JSON signed with "
    "HMAC-SHA256 under any of the secrets",
}
JWT_NOTE = (
    "a JWT from the cookie or the Bearer header, signed with a key from jwks_url (cached; an "
    "unknown kid refetched at most every 10 s) in one of algorithms; iss, aud and exp required"
)
