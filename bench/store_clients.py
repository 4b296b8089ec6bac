"""The Redis store with each client compared by ``bench/redis_clients.py`` (bench only).

``apps.py bridge --redis-client NAME`` builds the bridge with one of these stores.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from bridge.settings.schema import StoreSettings
from bridge.store.base import Changed, Lease
from bridge.store.redis import _SWAP_RECORD, RedisStore, _millis


class RedisPyStore(RedisStore):
    """Every command through redis-py (hiredis parses the replies when installed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pipe = None  # never opened: it connects on first use


class CoredisStore(RedisStore):
    """The hot path's read and swap through coredis 6 (one Redis), the rest through redis-py."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import coredis
        from coredis.exceptions import RedisError as CoredisError

        super().__init__(*args, **kwargs)
        self._pipe = None
        host, port = self.address.nodes[0]
        password = self.address.password.reveal() if self.address.password else None
        self.core = coredis.Redis(
            host=host,
            port=port,
            db=self.address.db,
            username=self.address.username,
            password=password,
            connect_timeout=self.timeout,
            decode_responses=False,
        )
        self._core_swap = self.core.register_script(_SWAP_RECORD)
        self._errors += (CoredisError,)
        self._running: asyncio.Future[None] | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()

    async def _run(self) -> None:
        # coredis 6 runs its connections in an anyio task group: entered and left in one task.
        async with self.core:
            self._ready.set()
            await self._closing.wait()

    async def _core(self) -> Any:
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        await self._ready.wait()
        return self.core

    async def get_record(self, key: str) -> bytes | None:
        async with self._guard():
            core = await self._core()
            raw = await core.get(key)
        return raw if raw is None or isinstance(raw, bytes) else bytes(raw)

    async def swap_record(
        self,
        key: str,
        expected: bytes,
        value: bytes,
        ttl: float,
        *,
        tombstone: str,
        fence: Lease | None = None,
    ) -> bool | Changed:
        keys = [key, tombstone] + ([fence.name] if fence is not None else [])
        args: list[Any] = [
            value,
            _millis(ttl),
            hashlib.sha1(expected, usedforsecurity=False).hexdigest(),
            fence.token if fence is not None else "",
        ]
        async with self._guard():
            await self._core()
            outcome = await self._core_swap(keys=keys, args=args)
        if isinstance(outcome, bytes):
            return Changed(outcome)
        if int(outcome) < 0:
            raise AssertionError("the bench takes no lock on the hot path")
        return int(outcome) == 1

    async def close(self) -> None:
        self._closing.set()
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
        await super().close()


def make_store(name: str, settings: StoreSettings) -> RedisStore:
    assert settings.address is not None
    kinds = {"pipe": RedisStore, "redis-py": RedisPyStore, "coredis": CoredisStore}
    return kinds[name](
        settings.address,
        prefix=settings.prefix,
        timeout=settings.timeout,
        lease=settings.lock_lease,
    )
