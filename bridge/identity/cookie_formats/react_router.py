"""React Router 7 / Remix ``createCookieSessionStorage``, verified as its ``cookie`` module does.

The cookie is ``<data>.<signature>``, URL-encoded: ``data`` is base64 of the session's JSON
(UTF-8), the signature unpadded base64 HMAC-SHA256 of ``data`` under one of the cookie's
``secrets``; every secret is tried, so the list rotates. The value carries no time of its own:
its lifetime is the cookie's ``maxAge``/``expires``, which the browser enforces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from bridge.identity.cookie_formats import MAX_COOKIE_LENGTH
from bridge.settings.schema import ReactRouterCookie


def _b64decode(text: str) -> bytes:
    # atob: standard alphabet, padding optional.
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class ReactRouterSession:
    def __init__(self, settings: ReactRouterCookie, clock: Callable[[], float]) -> None:
        self.name = settings.name
        self.secrets = [key.reveal().encode("utf-8") for key in settings.secret_keys]

    def unsign(self, value: str) -> str | None:
        data, dot, signature = value.rpartition(".")
        if not dot or not data:
            return None
        try:
            mac = _b64decode(signature)
        except (binascii.Error, ValueError):
            return None
        for secret in self.secrets:
            expected = hmac.new(secret, data.encode("utf-8"), hashlib.sha256).digest()
            if hmac.compare_digest(expected, mac):
                return data
        return None

    async def read(self, cookies: Mapping[str, str]) -> Mapping[str, Any] | None:
        value = cookies.get(self.name)
        if not value or len(value) > MAX_COOKIE_LENGTH:
            return None
        try:
            data = self.unsign(unquote(value, errors="strict"))
            if data is None:
                return None
            session = json.loads(_b64decode(data).decode("utf-8"))
        # RecursionError: JSON nested beyond Python's stack
        except (binascii.Error, ValueError, UnicodeError, RecursionError):
            return None
        return session if isinstance(session, dict) else None

    async def aclose(self) -> None:
        return None
