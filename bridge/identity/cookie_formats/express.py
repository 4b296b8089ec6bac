"""express-session's signed session id, and the session itself in the site's Redis.

The cookie (``connect.sid`` by default) is ``s:<id>.<signature>``, URL-encoded, where the
signature is cookie-signature's unpadded base64 HMAC-SHA256 of ``<id>`` under one of the
site's ``secret`` values. The session is the JSON that connect-redis keeps at
``<prefix><id>``; a session missing from the store (destroyed at logout, or expired) is a
visitor who is not signed in. The store failing or not answering in time is a 503: a broken
dependency is not a logout.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge.errors import IdentityProviderUnavailable
from bridge.identity.cookie_formats import MAX_COOKIE_LENGTH
from bridge.settings.schema import ExpressCookie

log = logging.getLogger("bridge.express_session")

MAX_SESSION_BYTES = 256 * 1024


def unsign(value: str, secret: str) -> str | None:
    """cookie-signature's ``unsign``: the id if ``value`` is ``<id>.<mac>`` under ``secret``."""
    tentative = value[: value.rfind(".")] if "." in value else ""
    mac = hmac.new(secret.encode("utf-8"), tentative.encode("utf-8"), hashlib.sha256).digest()
    expected = tentative + "." + base64.b64encode(mac).decode("ascii").rstrip("=")
    if tentative and hmac.compare_digest(expected.encode("utf-8"), value.encode("utf-8")):
        return tentative
    return None


class ExpressSession:
    def __init__(self, settings: ExpressCookie, clock: Callable[[], float]) -> None:
        self.name = settings.name
        self.prefix = settings.store_prefix
        self.timeout = settings.store_timeout
        self.clock = clock
        self.secrets = [key.reveal() for key in settings.secret_keys]
        self.redis = aioredis.Redis.from_url(
            settings.store_url,
            socket_timeout=settings.store_timeout,
            socket_connect_timeout=settings.store_timeout,
            retry_on_timeout=False,
            decode_responses=False,
        )

    def session_id(self, value: str | None) -> str | None:
        """Return the verified session id from the cookie value, or None."""
        if not value or len(value) > MAX_COOKIE_LENGTH:
            return None
        try:
            value = unquote(value, errors="strict")
        except UnicodeDecodeError:
            return None
        if not value.startswith("s:"):
            return None  # express-session ignores unsigned ids
        for secret in self.secrets:
            sid = unsign(value[2:], secret)
            if sid is not None:
                return sid
        return None

    async def read(self, cookies: Mapping[str, str]) -> Mapping[str, Any] | None:
        sid = self.session_id(cookies.get(self.name))
        if sid is None:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                raw = await self.redis.get(self.prefix + sid)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("site session store unavailable")
            raise IdentityProviderUnavailable() from exc
        if raw is None or len(raw) > MAX_SESSION_BYTES:
            return None
        try:
            session = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested beyond Python's stack
            return None
        if not isinstance(session, dict) or not self._fresh(session.get("cookie")):
            return None
        return session

    def _fresh(self, cookie: Any) -> bool:
        # express-session's own check (Store#get in its MemoryStore, and Session#cookie):
        # a session whose cookie has expired is over, even if the store still holds it.
        if not isinstance(cookie, dict) or cookie.get("expires") in (None, ""):
            return True
        expires = cookie["expires"]
        if not isinstance(expires, str):
            return False
        try:
            when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            return False
        return when.tzinfo is not None and self.clock() < when.timestamp()

    async def aclose(self) -> None:
        await self.redis.aclose()
