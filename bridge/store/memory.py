"""The embedded store: one process, aiocache's memory backend. Restarting loses everything."""

from __future__ import annotations

import asyncio
import builtins
import copy
import fnmatch
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiocache import SimpleMemoryCache

from bridge.errors import LeaseLost, StoreUnavailable
from bridge.store.base import Lease, Store


class MemoryStore(Store):
    def __init__(self, prefix: str = "sbridge") -> None:
        super().__init__(prefix)
        # Values are kept as compact JSON strings: no aliasing between readers and a smaller
        # footprint per idle session than live dicts.
        self.cache = SimpleMemoryCache(timeout=None)
        self._locks: dict[str, _CountedLock] = {}
        # Record writes and endings check, then act: nothing else may run in between.
        self._records = asyncio.Lock()

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self.cache.get(key)
        if raw is None or not isinstance(raw, str):
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    async def set(self, key: str, value: dict[str, Any], ttl: float) -> None:
        await self.cache.set(key, json.dumps(value, separators=(",", ":")), ttl=ttl)

    async def add(self, key: str, value: dict[str, Any], ttl: float) -> bool:
        try:
            await self.cache.add(key, json.dumps(value, separators=(",", ":")), ttl=ttl)
        except ValueError:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self.cache.delete(key)

    async def put_record(
        self,
        key: str,
        value: dict[str, Any],
        ttl: float,
        *,
        tombstone: str,
        fence: Lease | None = None,
        create: bool = False,
    ) -> bool:
        async with self._records:
            if await self.cache.exists(tombstone):
                return False
            if fence is not None:
                entry = self._locks.get(fence.name)
                if entry is None or entry.holder != fence.token:
                    raise LeaseLost()
            if await self.cache.exists(key) == create:
                return False
            await self.cache.set(key, json.dumps(value, separators=(",", ":")), ttl=ttl)
            return True

    async def end_record(self, key: str, tombstone: str, ttl: float) -> bool:
        async with self._records:
            await self.cache.set(tombstone, "1", ttl=ttl)
            return bool(await self.cache.delete(key))

    async def counter(self, key: str) -> int:
        value = await self.cache.get(key)
        return int(value) if isinstance(value, int) else 0

    async def incr(self, key: str, ttl: float) -> int:
        existed = await self.cache.exists(key)
        value = int(await self.cache.increment(key, 1))
        if not existed:
            await self.cache.expire(key, ttl)
        return value

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        members = await self.cache.get(key)
        if not isinstance(members, set):
            members = set()
        members.add(member)
        await self.cache.set(key, members, ttl=ttl)

    async def set_remove(self, key: str, member: str) -> None:
        members = await self.cache.get(key)
        if isinstance(members, set):
            members.discard(member)
            if not members:
                await self.cache.delete(key)

    async def set_members(self, key: str) -> builtins.set[str]:
        members = await self.cache.get(key)
        return set(members) if isinstance(members, set) else set()

    async def list_push(self, key: str, value: dict[str, Any], max_len: int, ttl: float) -> None:
        items = await self.cache.get(key)
        if not isinstance(items, list):
            items = []
        # A list, not a deque: a deque's first block alone is ~600 bytes, more than an idle
        # session's two events; trimming a list of at most max_len + 1 entries is as cheap.
        items.append(json.dumps(value, separators=(",", ":")))
        del items[:-max_len]
        await self.cache.set(key, items, ttl=ttl)

    async def list_range(self, key: str, limit: int) -> list[dict[str, Any]]:
        items = await self.cache.get(key)
        if not isinstance(items, list):
            return []
        newest = list(items)[-limit:] if limit > 0 else []
        return [json.loads(item) for item in reversed(newest)]

    @asynccontextmanager
    async def lock(self, name: str, *, wait: float) -> AsyncIterator[Lease]:
        entry = self._locks.get(name)
        if entry is None:
            entry = self._locks[name] = _CountedLock()
        entry.users += 1
        try:
            if entry.lock.locked():
                try:
                    await asyncio.wait_for(entry.lock.acquire(), wait)
                except TimeoutError as exc:
                    raise StoreUnavailable("The session is busy; try again shortly.") from exc
            else:
                # Free: take it now. wait_for would wrap the acquire in a task of its own, a
                # tenth of the token endpoint's time when nothing contends.
                await entry.lock.acquire()
            lease = Lease(name, secrets.token_hex(8))
            entry.holder = lease.token
            try:
                yield lease
            finally:
                entry.holder = None
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._locks.pop(name, None)

    async def scan(self, pattern: str) -> AsyncIterator[str]:
        for key in list(self.cache._cache):
            if fnmatch.fnmatchcase(key, pattern):
                yield key

    async def ping(self) -> bool:
        return True

    def snapshot(self) -> dict[str, Any]:
        """Return a deep copy of every raw value (tests use it to prove nothing changed).

        Rate-limit counters are left out: they count every request, refused ones included.
        """
        counters = self.key("rate", "")
        return {
            k: copy.deepcopy(v) for k, v in self.cache._cache.items() if not k.startswith(counters)
        }


class _CountedLock:
    __slots__ = ("holder", "lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
        self.holder: str | None = None
