"""The store interface every backend implements.

Values are JSON objects (:data:`JSONObject`), except session records: those are bytes the
session layer encodes (:mod:`bridge.sessions.manager`), so the store neither parses nor copies
them. Every key the bridge writes has a TTL, so nothing grows without bound. Backend failures
surface as :class:`bridge.errors.StoreUnavailable` (503), never as a backend-specific exception.

Session records are written through :meth:`Store.put_record` and ended through
:meth:`Store.end_record` only: an ending leaves a tombstone and every write checks it (and the
record's existence, and the writer's lock lease) in the same atomic step, so a request that
was in flight when its session ended can never write the session back.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TypeAlias

# What the store's plain values (everything but session records) may hold: JSON. The store
# does not know its users' shapes: each reads its values back into a type of its own (a
# msgspec Struct) or, as lifecycle events do, keeps them as the open mapping they are.
JSONValue: TypeAlias = "None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]"
JSONObject: TypeAlias = "dict[str, JSONValue]"


@dataclass(frozen=True)
class Changed:
    """A record write found the record changed since it was read: here is what is stored."""

    current: bytes

    def __repr__(self) -> str:
        return "Changed()"


@dataclass(frozen=True)
class Lease:
    """A held lock: its name and the random token that fences the holder's writes."""

    name: str
    token: str

    def __repr__(self) -> str:
        return f"Lease({self.name!r})"


class Store(abc.ABC):
    """Key-value records, sets (indexes), capped lists (events), counters and locks."""

    def __init__(self, prefix: str = "sbridge") -> None:
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def session_key(self, kind: str, session_id: str) -> str:
        """Name one of a session's keys: ``<prefix>:<kind>:{<session id>}``.

        The braces are a Redis Cluster hash tag: every key of one session hashes to one slot,
        so a script or a multi-key command may touch them together, while different sessions
        spread over the cluster's nodes. Every per-session key must be named here.
        """
        return self.key(kind, "{" + session_id + "}")

    def session_of(self, kind: str, key: str) -> str | None:
        """Return the session id in a key that :meth:`session_key` named, else None."""
        head = self.key(kind, "{")
        if key.startswith(head) and key.endswith("}"):
            return key[len(head) : -1]
        return None

    @abc.abstractmethod
    async def get(self, key: str) -> JSONObject | None: ...

    @abc.abstractmethod
    async def set(self, key: str, value: JSONObject, ttl: float) -> None: ...

    @abc.abstractmethod
    async def add(self, key: str, value: JSONObject, ttl: float) -> bool:
        """Set ``key`` only if it does not exist; tell whether it was set."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    async def get_record(self, key: str) -> bytes | None:
        """Return a session record's stored bytes (None if there is none)."""

    @abc.abstractmethod
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
        """Write a session record, atomically, only while it lives; tell whether it was written.

        Not written when ``tombstone`` exists (the session ended), when the record is gone
        (unless ``create``, which in turn never overwrites), and, raising
        :class:`~bridge.errors.LeaseLost`, when ``fence`` is no longer the lock's holder.
        """

    @abc.abstractmethod
    async def swap_record(
        self,
        key: str,
        expected: bytes,
        value: bytes,
        ttl: float,
        *,
        fence: Lease | None = None,
    ) -> bool | Changed:
        """Replace a session record that is still ``expected`` with ``value``, atomically.

        True when written; False (nothing written) when the record is gone;
        :class:`Changed` with the stored bytes when another write came first (nothing
        written); :class:`~bridge.errors.LeaseLost` when ``fence`` no longer holds the lock.
        One round trip, and no lock: this is the hot path's only write.

        No tombstone check is needed here: a record and its tombstone never exist together
        (:meth:`end_record` deletes the one as it leaves the other, and :meth:`put_record`
        writes nothing under a tombstone), so an ended session's record is gone and the swap
        finds nothing to replace.
        """

    @abc.abstractmethod
    async def end_record(self, key: str, tombstone: str, ttl: float) -> bool:
        """Leave ``tombstone`` for ``ttl`` s and delete the record, atomically; tell whether
        there was one."""

    @abc.abstractmethod
    async def incr(self, key: str, ttl: float) -> int:
        """Add one to a counter; the TTL starts when the counter is created."""

    @abc.abstractmethod
    async def set_add(self, key: str, member: str, ttl: float) -> None: ...

    @abc.abstractmethod
    async def set_remove(self, key: str, member: str) -> None: ...

    @abc.abstractmethod
    async def set_members(self, key: str) -> builtins.set[str]: ...

    @abc.abstractmethod
    async def list_push(self, key: str, value: JSONObject, max_len: int, ttl: float) -> None:
        """Append to a capped list, dropping the oldest entries beyond ``max_len``."""

    @abc.abstractmethod
    async def list_range(self, key: str, limit: int) -> list[JSONObject]:
        """Return up to ``limit`` newest entries, newest first."""

    @abc.abstractmethod
    async def counter(self, key: str) -> int:
        """Read a counter without counting (0 when there is none)."""

    @abc.abstractmethod
    def lock(self, name: str, *, wait: float) -> AbstractAsyncContextManager[Lease]:
        """Hold an exclusive lock on ``name``; raise StoreUnavailable if not had in ``wait`` s.

        The lease it yields fences the holder's record writes (:meth:`put_record`).
        """

    @abc.abstractmethod
    async def scan(self, pattern: str) -> AsyncIterator[str]:
        """Yield keys matching a glob pattern (admin and CLI listing; not for hot paths)."""
        yield ""  # pragma: no cover

    @abc.abstractmethod
    async def ping(self) -> bool: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
