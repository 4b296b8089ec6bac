"""A document an identity provider publishes (discovery, a JWKS), kept between fetches.

A stale copy beats none: a failed fetch keeps what was cached and waits before asking again
(``FETCH_BACKOFF``, doubling per failure up to ``FETCH_BACKOFF_MAX``), so a provider that is
down is asked every few seconds to minutes, not on every login. Requests that need a fetch at
the same moment share one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from bridge.errors import IdentityProviderUnavailable

T = TypeVar("T")
JWKS_MAX_AGE = 3600.0
# An unknown kid refetches the JWKS at most this often, so forged tokens cannot make the
# bridge hammer the provider.
JWKS_MIN_REFETCH = 10.0
FETCH_BACKOFF = 5.0
FETCH_BACKOFF_MAX = 300.0


class Refetched(Generic[T]):
    """The last good copy of a document, its age, and when a failing fetch may be tried again."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[T]],
        clock: Callable[[], float],
        *,
        cold_backoff: bool = True,
    ) -> None:
        self.fetch = fetch
        self.clock = clock
        # False: until a first copy is fetched, every request (one at a time) asks again.
        self.cold_backoff = cold_backoff
        self.value: T | None = None
        self.fetched_at = float("-inf")
        self.failures = 0  # failed fetches in a row
        self.retry_at = float("-inf")
        self._lock = asyncio.Lock()

    def _fresh(self, max_age: float) -> T | None:
        return self.value if self.clock() - self.fetched_at < max_age else None

    async def get(self, max_age: float) -> T:
        """Return the copy if younger than ``max_age`` seconds, else fetch it (backing off)."""
        if (value := self._fresh(max_age)) is not None:
            return value
        async with self._lock:  # one fetch for every request that needed it
            if (value := self._fresh(max_age)) is not None:
                return value
            now = self.clock()
            if now < self.retry_at:
                if self.value is None:
                    raise IdentityProviderUnavailable()
                return self.value
            try:
                value = await self.fetch()
            except IdentityProviderUnavailable:
                if self.value is None and not self.cold_backoff:
                    raise
                self.failures += 1
                backoff = FETCH_BACKOFF * 2 ** (self.failures - 1)
                self.retry_at = now + min(backoff, FETCH_BACKOFF_MAX)
                if self.value is None:
                    raise
                return self.value
            self.value, self.fetched_at, self.failures = value, now, 0
            return value
