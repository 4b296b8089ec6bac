"""Rate limits on the token endpoint: per bridge session and per client IP.

Fixed windows aligned to the clock, counted with the store's ``incr`` so that every instance
sharing a Redis store shares the counters. A window's counter key names the window, so a
counter never needs resetting and its TTL only cleans up.

Cache hits count too: each answer hands out a live access token and starts a handle chain
(evicting the session's oldest tab beyond ``max_chains``), so a script injected into the page
could otherwise churn chains and the store at will.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

from quart import Request

from bridge.errors import RateLimited
from bridge.sessions import SessionManager
from bridge.settings import LimitsSettings, RateLimit
from bridge.store.base import Store

# IPv6 hosts usually own a whole /64; counting addresses inside it would let one host rotate.
IPV6_PREFIX = 64


class RateLimiter:
    def __init__(
        self,
        settings: LimitsSettings,
        store: Store,
        sessions: SessionManager,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.clock = clock
        # on_limited(scope): metrics hook, called once per refused request.
        self.on_limited: Callable[[str], None] | None = None

    async def check(self, request: Request) -> None:
        """Count this request; raise RateLimited when its session or its IP is over the limit."""
        # Keyed by the cookie's hash, known without a store read; a request with no (or a
        # made-up) cookie is still held by the per-IP limit.
        token = self.sessions.cookie_token(request)
        if token is not None:
            await self._hit("session", self.sessions.session_id(token), self.settings.per_session)
        await self._hit("ip", client_bucket(request.remote_addr), self.settings.per_ip)

    async def check_login(self, request: Request) -> None:
        """Count a login start; raise RateLimited when its IP starts too many."""
        await self._hit("login", client_bucket(request.remote_addr), self.settings.login_per_ip)

    async def _hit(self, scope: str, ident: str, limit: RateLimit) -> None:
        if not limit.enabled:
            return
        now = self.clock()
        window = int(now // limit.window)
        key = self.store.key("rate", scope, ident, str(window))
        count = await self.store.incr(key, limit.window + 1)
        if count > limit.count:
            if self.on_limited:
                self.on_limited(scope)
            retry_after = max(1, math.ceil((window + 1) * limit.window - now))
            raise RateLimited(retry_after)


def client_bucket(address: str | None) -> str:
    """Return the rate-limit bucket of a client address (its /64 for IPv6)."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False).network_address)
    return str(ip)
