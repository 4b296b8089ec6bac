"""The embedded store: one process, plain dicts. Restarting loses everything.

Every operation runs without awaiting anything in between its check and its write, so each
is atomic on the event loop without a lock (and costs no task, no timer per key). A key's TTL
is a deadline beside its value: an expired key reads as absent, and a sweep at most every
``SWEEP_INTERVAL`` seconds, on a write, drops the expired ones.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import fnmatch
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import msgspec

from bridge.errors import LeaseLost, StoreUnavailable
from bridge.secret import token_hex
from bridge.store.base import Changed, JSONObject, Lease, Store

SWEEP_INTERVAL = 10.0

# A key's value as kept: a JSON value's encoding or a session record (bytes), a counter, an
# index (a set of members) or a capped list's encoded entries.
Raw: TypeAlias = bytes | int | tuple[str, ...] | set[str] | list[bytes]
# A set of up to this many members (a user's sessions, usually one or two) is kept as a tuple:
# a one-member set is 216 bytes, a one-member tuple 48, for every idle session's user.
SMALL_SET = 8


def _plain(value: object) -> object:
    # Settings' value types (Text and its kind, e.g. an OIDC issuer URL) are str subclasses:
    # stored as plain text.
    if isinstance(value, str):
        return str(value)
    raise NotImplementedError(type(value).__name__)


_encode = msgspec.json.Encoder(enc_hook=_plain).encode
_decode = msgspec.json.decode


class MemoryStore(Store):
    def __init__(self, prefix: str = "sbridge") -> None:
        super().__init__(prefix)
        # key -> (value, monotonic deadline). Dict values are kept encoded (JSON bytes): no
        # aliasing between readers, and smaller than live dicts for an idle session.
        self._data: dict[str, tuple[Raw, float]] = {}
        self._locks: dict[str, _CountedLock] = {}
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL

    # --- the dict ---------------------------------------------------------------------------

    def _get(self, key: str) -> Raw | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._data[key]
            return None
        return entry[0]

    def _put(self, key: str, value: Raw, ttl: float) -> None:
        now = time.monotonic()
        self._data[key] = (value, now + ttl)
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            expired = [k for k, (_, deadline) in self._data.items() if deadline <= now]
            for k in expired:
                del self._data[k]

    def _deadline(self, key: str) -> float:
        return self._data[key][1]

    # --- records ------------------------------------------------------------------------

    async def get(self, key: str) -> JSONObject | None:
        raw = self._get(key)
        if not isinstance(raw, bytes):
            return None
        value = _decode(raw)
        return value if isinstance(value, dict) else None

    async def set(self, key: str, value: JSONObject, ttl: float) -> None:
        self._put(key, _encode(value), ttl)

    async def add(self, key: str, value: JSONObject, ttl: float) -> bool:
        if self._get(key) is not None:
            return False
        self._put(key, _encode(value), ttl)
        return True

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def get_record(self, key: str) -> bytes | None:
        raw = self._get(key)
        return raw if isinstance(raw, bytes) else None

    def _check_fence(self, fence: Lease | None) -> None:
        if fence is not None:
            entry = self._locks.get(fence.name)
            if entry is None or entry.holder != fence.token:
                raise LeaseLost()

    async def put_record(
        self,
        key: str,
        value: bytes,
        ttl: float,
        *,
        tombstone: str,
        fence: Lease | None = None,
        create: bool = False,
    ) -> bool:
        if self._get(tombstone) is not None:
            return False
        self._check_fence(fence)
        if (self._get(key) is not None) == create:
            return False
        self._put(key, value, ttl)
        return True

    async def swap_record(
        self,
        key: str,
        expected: bytes,
        value: bytes,
        ttl: float,
        *,
        fence: Lease | None = None,
    ) -> bool | Changed:
        self._check_fence(fence)
        current = self._get(key)
        if not isinstance(current, bytes):
            return False
        if current is not expected and current != expected:
            return Changed(current)
        self._put(key, value, ttl)
        return True

    async def end_record(self, key: str, tombstone: str, ttl: float) -> bool:
        self._put(tombstone, b"1", ttl)
        existed = self._get(key) is not None
        self._data.pop(key, None)
        return existed

    # --- counters ---------------------------------------------------------------------------

    async def counter(self, key: str) -> int:
        value = self._get(key)
        return value if isinstance(value, int) else 0

    async def incr(self, key: str, ttl: float) -> int:
        value = self._get(key)
        if isinstance(value, int):
            self._data[key] = (value + 1, self._deadline(key))
            return value + 1
        self._put(key, 1, ttl)
        return 1

    # --- sets (indexes) -------------------------------------------------------------------

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        members = self._get(key)
        if isinstance(members, set):
            members.add(member)
        elif isinstance(members, tuple):
            if member not in members:
                grown = (*members, member)
                members = grown if len(grown) <= SMALL_SET else set(grown)
        else:
            self._put(key, (member,), ttl)
            return
        # An index lives as long as its longest-lived member may: its TTL only grows.
        self._data[key] = (members, max(self._deadline(key), time.monotonic() + ttl))

    async def set_remove(self, key: str, member: str) -> None:
        members = self._get(key)
        if isinstance(members, tuple):
            rest = tuple(m for m in members if m != member)
            if rest:
                self._data[key] = (rest, self._deadline(key))
            else:
                self._data.pop(key, None)
        elif isinstance(members, set):
            members.discard(member)
            if not members:
                self._data.pop(key, None)

    async def set_members(self, key: str) -> builtins.set[str]:
        members = self._get(key)
        return set(members) if isinstance(members, tuple | set) else set()

    # --- capped lists (events) ------------------------------------------------------------

    async def list_push(self, key: str, value: JSONObject, max_len: int, ttl: float) -> None:
        stored = self._get(key)
        items = stored if isinstance(stored, list) else []
        # A list, not a deque: a deque's first block alone is ~600 bytes, more than an idle
        # session's two events; trimming a list of at most max_len + 1 entries is as cheap.
        items.append(_encode(value))
        del items[:-max_len]
        self._put(key, items, ttl)

    async def list_range(self, key: str, limit: int) -> list[JSONObject]:
        items = self._get(key)
        if not isinstance(items, list):
            return []
        newest = list(items)[-limit:] if limit > 0 else []
        return [_decode(item) for item in reversed(newest)]

    # --- locks ----------------------------------------------------------------------------

    @asynccontextmanager
    async def lock(self, name: str, *, wait: float) -> AsyncIterator[Lease]:
        entry = self._locks.get(name)
        if entry is None:
            entry = self._locks[name] = _CountedLock()
        entry.users += 1
        try:
            if entry.lock.locked():
                # Waiters are woken by the release itself (asyncio.Lock), never by polling.
                try:
                    await asyncio.wait_for(entry.lock.acquire(), wait)
                except TimeoutError as exc:
                    raise StoreUnavailable("The session is busy; try again shortly.") from exc
            else:
                # Free: take it now. wait_for would wrap the acquire in a task of its own.
                await entry.lock.acquire()
            lease = Lease(name, token_hex(8))
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
        for key in list(self._data):
            if self._get(key) is not None and fnmatch.fnmatchcase(key, pattern):
                yield key

    async def ping(self) -> bool:
        return True

    def entries(self) -> dict[str, tuple[Raw, float]]:
        """Return a deep copy of every live key's raw value and deadline, counters included."""
        now = time.monotonic()
        return {k: copy.deepcopy(e) for k, e in list(self._data.items()) if e[1] > now}

    def expiry(self, key: str) -> float | None:
        """Return when ``key`` expires (monotonic time), None if there is no such key."""
        entry = self._data.get(key)
        return entry[1] if entry is not None else None

    def snapshot(self) -> dict[str, Raw]:
        """Return a deep copy of every live raw value (tests use it to prove nothing changed).

        Rate-limit counters are left out: they count every request, refused ones included.
        """
        counters = self.key("rate", "")
        return {
            k: copy.deepcopy(v)
            for k in list(self._data)
            if not k.startswith(counters) and (v := self._get(k)) is not None
        }


class _CountedLock:
    __slots__ = ("holder", "lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
        self.holder: str | None = None
