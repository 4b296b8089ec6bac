"""Limits that guard what costs: Sentifyd logins, stored sessions, chains, anonymous work.

A cached answer to a signed-in visitor costs a store read and write; thousands of visitors may
share one address (an office, a carrier's NAT, a proxy not yet in ``trusted_proxies``). So
nothing here counts a signed-in visitor's traffic per address. What is counted:

- per session: its requests (a backstop) and its first requests, each a new handle chain,
  counted in the session's record (written by each request anyway);
- per user: new sessions, each one a Sentifyd login, counted by
  :meth:`bridge.sessions.manager.SessionManager.create` (through its ``before_create``), where every
  way in (site cookie, JWT, "who am I", SSO) makes its sessions; the cap on live sessions is
  there too;
- per client address: anonymous work only, that is refusals (401/403) and the identity checks
  they cost: beyond the limit a refusal becomes 429, while a visitor who is recognised and
  admitted is never refused per address. Only when recognising a visitor costs a call to the
  site (the "who am I" source) is an address over its limit refused before that call, unless
  the request brings a live bridge session;
- per avatar, optionally: Sentifyd logins across every instance (503 ``upstream_busy``).

Fixed windows aligned to the clock, counted with the store's ``incr`` (or in the session's
record), so every instance on one Redis shares the counters. A window's counter key names the
window, so a counter never needs resetting and its TTL only cleans up.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

from bridge.errors import RateLimited, UpstreamBusy
from bridge.observe.incoming import Incoming
from bridge.sessions.manager import Count, SessionRecord
from bridge.settings.schema import AvatarSettings, LimitsSettings
from bridge.settings.values import RateLimit
from bridge.store.base import Store

# IPv6 hosts usually own a whole /64; counting addresses inside it would let one host rotate.
IPV6_PREFIX = 64


class RateLimiter:
    def __init__(
        self,
        settings: LimitsSettings,
        store: Store,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        # on_limited(scope): metrics hook, called once per refused request.
        self.on_limited: Callable[[str], None] | None = None

    def count_session(self, record: SessionRecord, *, first: bool) -> None:
        """Count a token request in its session's record; ``first`` (no handle) also starts a
        chain. Raise RateLimited beyond a budget (the record is then not written, so a refused
        request changes nothing stored).

        The windows live in the record, which every token request writes anyway: a session's
        counting costs no store command of its own.
        """
        self._count(record, "session", self.settings.per_session)
        if first:
            self._count(record, "chain", self.settings.new_chains_per_session)

    def _count(self, record: SessionRecord, scope: str, limit: RateLimit) -> None:
        if not limit.enabled:
            return
        window = int(self.clock() // limit.window)
        count = next((c for c in record.counts if c.scope == scope), None)
        if count is None:
            count = Count(scope, window, 0)
            record.counts.append(count)
        elif count.window != window:
            count.window, count.n = window, 0
        if count.n >= limit.count:
            self._refuse(scope, window, limit)
        count.n += 1

    async def check_new_session(self, subject: str) -> None:
        """Count a new session of ``subject``; raise RateLimited beyond the user's budget."""
        await self._hit("user", subject, self.settings.new_sessions_per_user)

    async def check_address(self, request: Incoming) -> None:
        """Refuse anonymous work from an address that has already caused too much of it."""
        limit = self.settings.per_ip
        if not limit.enabled:
            return
        window, key = self._window("ip", client_bucket(request.remote_addr), limit)
        if await self.store.counter(key) >= limit.count:
            self._refuse("ip", window, limit)

    async def count_anonymous(self, request: Incoming) -> None:
        """Count one piece of anonymous work (a refusal); raise RateLimited beyond the limit."""
        await self._hit("ip", client_bucket(request.remote_addr), self.settings.per_ip)

    async def check_login(self, request: Incoming) -> None:
        """Count a login start; raise RateLimited when its IP starts too many."""
        await self._hit("login", client_bucket(request.remote_addr), self.settings.login_per_ip)

    async def spend_upstream_login(self, avatar: AvatarSettings) -> None:
        """Count a Sentifyd login with ``avatar``'s key; raise UpstreamBusy when spent."""
        limit = self.settings.upstream_logins_per_avatar
        if not limit.enabled:
            return
        window, key = self._window("upstream", avatar.name, limit)
        if await self.store.incr(key, limit.window + 1) > limit.count:
            if self.on_limited:
                self.on_limited("upstream")
            raise UpstreamBusy(self._retry_after(window, limit))

    def _window(self, scope: str, ident: str, limit: RateLimit) -> tuple[int, str]:
        window = int(self.clock() // limit.window)
        return window, self.store.key("rate", scope, ident, str(window))

    def _retry_after(self, window: int, limit: RateLimit) -> int:
        return max(1, math.ceil((window + 1) * limit.window - self.clock()))

    def _refuse(self, scope: str, window: int, limit: RateLimit) -> None:
        if self.on_limited:
            self.on_limited(scope)
        raise RateLimited(self._retry_after(window, limit))

    async def _hit(self, scope: str, ident: str, limit: RateLimit) -> None:
        if not limit.enabled:
            return
        window, key = self._window(scope, ident, limit)
        if await self.store.incr(key, limit.window + 1) > limit.count:
            self._refuse(scope, window, limit)


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
