"""The session formats of other frameworks, each verified the way that framework does it.

Each module reads one framework's session value with the site's own secret and returns the
session's data, or None for a visitor who is not signed in (absent, tampered, wrongly keyed,
expired, meant for another purpose, oversized or malformed: all alike). Only a failing
dependency the site's session lives in (Express's Redis) raises, as a 503.

    django        django.core.signing + the signed_cookies session backend
    rails         ActiveSupport::MessageEncryptor (AES-256-GCM), Rails' encrypted cookie jar
    express       express-session's signed id (cookie-signature) + connect-redis
    nextjs        Auth.js v5 and NextAuth v4 JWE session cookies
    react_router  React Router 7 / Remix createCookieSessionStorage
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bridge.settings.schema import (
    AuthJSCookie,
    DjangoCookie,
    ExpressCookie,
    RailsCookie,
    ReactRouterCookie,
    SiteCookie,
)

# Browsers cap a cookie at 4096 bytes; anything longer did not come from the site.
MAX_COOKIE_LENGTH = 4096


class CookieFormat(Protocol):
    async def read(self, cookies: Mapping[str, str]) -> Mapping[str, Any] | None:
        """Return the verified session data from the request's cookies, or None."""

    async def aclose(self) -> None: ...


def open_format(settings: SiteCookie, clock: Callable[[], float]) -> CookieFormat:
    """Build the reader for ``settings.format`` (one of the formats this package knows)."""
    if isinstance(settings, DjangoCookie):
        from bridge.identity.cookie_formats.django import DjangoSession

        return DjangoSession(settings, clock)
    if isinstance(settings, RailsCookie):
        from bridge.identity.cookie_formats.rails import RailsSession

        return RailsSession(settings, clock)
    if isinstance(settings, ExpressCookie):
        from bridge.identity.cookie_formats.express import ExpressSession

        return ExpressSession(settings, clock)
    if isinstance(settings, AuthJSCookie):  # and NextAuthV4Cookie
        from bridge.identity.cookie_formats.nextjs import NextJSSession

        return NextJSSession(settings, clock)
    if isinstance(settings, ReactRouterCookie):
        from bridge.identity.cookie_formats.react_router import ReactRouterSession

        return ReactRouterSession(settings, clock)
    raise ValueError(f"unknown cookie format {settings.format!r}")


__all__ = ["MAX_COOKIE_LENGTH", "CookieFormat", "open_format"]
