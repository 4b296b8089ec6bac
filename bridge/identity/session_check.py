"""The third way in: ask the site itself who the visitor is.

For sites whose login cookie the bridge cannot verify (Django, Rails, PHP sessions, ...), the
bridge forwards the named cookies, and only those, to the site's "who am I" URL, and only to
that URL (no redirects followed). 200 with a JSON user id means signed in; 401 or 403 means
not; anything else, or no answer in time, is a 503 ``identity_provider_unavailable``. Answers
are cached briefly per cookie value, keyed by a hash of it, so a page full of token requests
costs the site one check.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from functools import cached_property
from typing import Any

import httpx

from bridge.errors import IdentityProviderUnavailable
from bridge.identity import Identity, Method
from bridge.identity.peer import PeerSource
from bridge.observe.incoming import Incoming
from bridge.settings.schema import SessionCheckSettings

log = logging.getLogger("bridge.session_check")

MAX_CACHE_ENTRIES = 10_000
MAX_ANSWER_BYTES = 64 * 1024
MAX_COOKIE_LENGTH = 4096
# RFC 6265, 4.1.1: what a cookie value may hold unquoted. A browser's quoted value comes out of
# the parser unescaped ("x\073 other=1" is "x; other=1"), and pasted into our Cookie header it
# would be two cookies: such a value is not forwarded at all.
COOKIE_OCTETS = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+")


class SessionCheckSource(PeerSource[SessionCheckSettings]):
    method: Method = "session_check"
    remote = True  # one call to the site per visitor not yet known
    max_answer_bytes = MAX_ANSWER_BYTES

    @cached_property
    def _cache(self) -> OrderedDict[str, tuple[float, Identity | None]]:
        return OrderedDict()  # by a hash of the forwarded cookies: (until, identity)

    def _forwarded(self, request: Incoming) -> dict[str, str]:
        forwarded = {}
        for name in self.settings.cookies:
            value = request.cookies.get(name, "")
            if len(value) <= MAX_COOKIE_LENGTH and COOKIE_OCTETS.fullmatch(value):
                forwarded[name] = value
        return forwarded

    async def identify(self, request: Incoming, record: object = None) -> Identity | None:
        cookies = self._forwarded(request)
        if not cookies:
            return None
        key = hashlib.sha256(
            "\x00".join(f"{k}={v}" for k, v in sorted(cookies.items())).encode()
        ).hexdigest()
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        identity = await self._ask(cookies)
        if self.settings.cache_ttl:
            self._cache[key] = (now + self.settings.cache_ttl, identity)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return identity

    async def _ask(self, cookies: dict[str, str]) -> Identity | None:
        # One Cookie header built here, so nothing but the named cookies can travel.
        header = "; ".join(f"{name}={value}" for name, value in cookies.items())
        try:
            response = await self.http.get(self.settings.url, headers={"Cookie": header})
        except httpx.TimeoutException as exc:
            log.warning("session check timed out")
            raise IdentityProviderUnavailable() from exc
        except httpx.HTTPError as exc:
            log.warning("session check unreachable")
            raise IdentityProviderUnavailable() from exc
        if response.status_code in (401, 403):
            return None
        if response.status_code != 200 or len(response.content) > MAX_ANSWER_BYTES:
            log.warning(
                "session check answer unusable", extra={"fields": {"status": response.status_code}}
            )
            raise IdentityProviderUnavailable()
        try:
            body: Any = response.json()
        except (ValueError, RecursionError) as exc:
            raise IdentityProviderUnavailable() from exc
        if not isinstance(body, dict):
            raise IdentityProviderUnavailable()
        user = body.get(self.settings.user_field)
        if isinstance(user, bool) or not isinstance(user, str | int) or user == "":
            # Signed in by status, but no user id: the site's endpoint is not what config says.
            log.warning("session check answer has no user id")
            raise IdentityProviderUnavailable()
        subject = str(user)
        if len(subject) > 256:
            raise IdentityProviderUnavailable()
        claims = {f: body[f] for f in self.settings.claim_fields if f in body}
        return Identity(subject=subject, method=self.method, claims=claims)
