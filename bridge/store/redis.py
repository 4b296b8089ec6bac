"""The shared store: Redis, for several bridge instances behind a balancer.

One Redis (``redis://``), a Sentinel-managed master (``redis+sentinel://``) or a Redis Cluster
(``redis+cluster://``), each through redis-py's own client for it: the Sentinel client asks the
sentinels where the master is whenever it reconnects, and the cluster client follows ``MOVED``
and ``ASK`` and re-reads the slot map after a node fails over. The store's code is the same for
all three, because no command and no script touches keys of two hash slots. A session's keys
carry its id in a hash tag (:meth:`Store.session_key`): they share one slot, so a script may
touch several of them, while different sessions spread over a cluster's nodes. Every other key
(a user's index, an event list, a counter) is used alone.

Records are JSON values, one key each, written with one ``SET ... PX``: a session record is
never half-written. With one Redis or Sentinel, the token hot path's record read and conditional
write go over one pipelined connection of the store's own (:mod:`bridge.store.pipe`), which asks
the sentinels for the master whenever it connects: redis-py's pooled call cost more CPU than the
rest of a token request. Everything else, and a cluster, goes through redis-py.

Every operation is bounded by ``[store] timeout``; every backend failure (refused, reset, slow,
a Redis error, no master known during a failover) becomes :class:`~bridge.errors.StoreUnavailable`
(503), and the clients reconnect by themselves once Redis is back.

The lock is a lease: ``SET NX PX`` with a random token, extended by a background task while its
holder works (so a slow upstream call never outlives it), released by compare-and-delete. A
holder that dies stops renewing, and its lease lapses within ``lease`` seconds. The token also
fences: a session record is written by one script that checks, with the write, that the
writer's token still holds the lock, that the session has no tombstone and that its record
still exists, so a holder that stalled past its lease, or outlived its session, writes nothing.
Each script touches the keys of one session only (record, tombstone, lock).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any, NotRequired, TypedDict

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from bridge.errors import ConfigError, LeaseLost, StoreUnavailable
from bridge.secret import token_urlsafe
from bridge.settings.schema import StoreSettings
from bridge.settings.values import RedisAddress
from bridge.settings.values import parse_url as parse_url  # the store URL reader, for callers here
from bridge.store.base import Changed, JSONObject, Lease, Store
from bridge.store.pipe import Pipe

log = logging.getLogger("bridge.store")

BUSY = "The session is busy; try again shortly."

# Counters get their TTL when created; a counter somehow left without one gets it here too.
_INCR = """
local value = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return value
"""
# An index lives as long as its longest-lived member may: its TTL only ever grows.
_SET_ADD = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
# Append, cap and expire in one step (a cluster client has no MULTI across its pool).
_LIST_PUSH = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# KEYS: record, tombstone[, lock]; ARGV: value, ttl ms, lock token or "", "1" to create.
_PUT_RECORD = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[3] then return -1 end
local mode = 'XX'
if ARGV[4] == '1' then mode = 'NX' end
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], mode) then return 1 end
return 0
"""
# KEYS: record, tombstone; ARGV: tombstone ttl ms.
_END_RECORD = """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return redis.call('DEL', KEYS[1])
"""
# The hot path's write. KEYS: record[, lock]; ARGV: value, ttl ms, SHA-1 of the value the
# writer read, lock token or "". Swaps the record in only if it is still what the writer read
# (else puts it back and returns it); one command inside when nothing contends. No tombstone
# check: _END_RECORD deletes the record as it leaves the tombstone and _PUT_RECORD writes
# nothing under one, so the two never exist together and an ended record fails 'XX'.
_SWAP_RECORD = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then return -1 end
local old = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'XX', 'GET')
if not old then return 0 end
if redis.sha1hex(old) == ARGV[3] then return 1 end
redis.call('SET', KEYS[1], old, 'KEEPTTL')
return old
"""
# KEYS: lock, waiters; ARGV: token, lease ms. Take a free lock, or count in as its waiter in
# the same step (so a release in between cannot miss this waiter).
_LOCK_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 0
"""
# KEYS: lock, waiters, wake list; ARGV: token, wake ttl ms. Release, and wake one waiter (an
# element of the wake list its BLPOP returns with): the lock passes from holder to holder, not
# to a herd. A waiter that gave up leaves its element to the next one blocked.
_LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
  redis.call('DECR', KEYS[2])
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
return 1
"""
_LOCK_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class _ClientOptions(TypedDict):
    """What every topology's client is built with."""

    socket_timeout: float | None
    socket_connect_timeout: float
    retry: Retry
    username: str | None
    password: str | None
    ssl: NotRequired[bool]
    ssl_ca_certs: NotRequired[str]


def connect(address: RedisAddress, timeout: float) -> tuple[Redis | RedisCluster, Sentinel | None]:
    """Build redis-py's client for the address's topology (and, for Sentinel, its sentinels)."""
    # One immediate retry on a fresh connection: after a restart or a failover every pooled
    # connection is dead, and the first command on each would otherwise fail.
    options: _ClientOptions = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
        "username": address.username,
        "password": address.password.reveal() if address.password else None,
    }
    if address.tls:
        options["ssl"] = True
        if address.ca_certs:
            options["ssl_ca_certs"] = address.ca_certs
    if address.topology == "sentinel":
        assert address.service is not None
        # The sentinels are asked in turn, without the data nodes' credentials and TLS; a hung
        # one must leave time to ask the next within the store's timeout.
        ask = timeout / (len(address.nodes) + 1)
        sentinel = Sentinel(
            list(address.nodes),
            sentinel_kwargs={
                "socket_timeout": ask,
                "socket_connect_timeout": ask,
                "retry": Retry(NoBackoff(), 0),
            },
        )
        return sentinel.master_for(address.service, db=address.db, **options), sentinel
    if address.topology == "cluster":
        nodes = [ClusterNode(host, port) for host, port in address.nodes]
        # A MOVED only moves its slot in the client's map: reinitialize_steps would otherwise
        # close every connection after a few of them (during a resharding), under the feet of
        # the commands in flight on them.
        return RedisCluster(startup_nodes=nodes, reinitialize_steps=0, **options), None
    host, port = address.nodes[0]
    # One Redis: no per-read timer of redis-py's own (a timer and a task per command). Every
    # call is already bounded by RedisStore's guard, whose cancellation makes redis-py drop
    # the connection it was reading from. Sentinel and Cluster keep theirs: their clients fail
    # over on a read's TimeoutError.
    options["socket_timeout"] = None
    return Redis(host=host, port=port, db=address.db, **options), None


class _Guard:
    """``async with store._guard():`` a timeout around the calls, and any failure a 503.

    ``timed=False`` for the pipe's calls, which it bounds itself (a late reply closes its
    connection). A class rather than a generator-based context manager: it is entered on
    every Redis call.
    """

    __slots__ = ("store", "timeout")

    def __init__(self, store: RedisStore, timed: bool) -> None:
        self.store = store
        self.timeout = asyncio.timeout(store.timeout) if timed else None

    async def __aenter__(self) -> None:
        if self.timeout is not None:
            await self.timeout.__aenter__()

    async def __aexit__(self, kind: Any, error: Any, traceback: Any) -> None:
        store = self.store
        if self.timeout is not None:
            try:
                await self.timeout.__aexit__(kind, error, traceback)
            except store._errors as exc:  # the timeout's TimeoutError
                error = exc
        if error is not None and isinstance(error, store._errors):
            # One line when an outage starts, not one per request; the type only, because a
            # Redis error's text may quote a value.
            if not store._failing:
                store._failing = True
                log.warning(
                    "redis unavailable", extra={"fields": {"exc_type": type(error).__name__}}
                )
            raise StoreUnavailable() from error
        if error is None and store._failing:
            store._failing = False
            log.warning("redis available again")


class RedisStore(Store):
    """Records, indexes, events and leased locks in Redis, shared by every instance."""

    def __init__(
        self,
        address: RedisAddress,
        *,
        prefix: str = "sbridge",
        timeout: float = 2.0,
        lease: float = 10.0,
    ) -> None:
        super().__init__(prefix)
        self.address = address
        self.timeout = timeout
        self.lease = lease
        self._failing = False
        self.client, self._sentinel = connect(address, timeout)
        self._errors: tuple[type[BaseException], ...] = (
            RedisError,
            RedisClusterException,
            OSError,
            TimeoutError,
        )
        if address.topology == "cluster":
            # The cluster client, when it re-reads the slot map after a failover, closes every
            # connection, including those other commands are using: those fail with these
            # (a closed transport, a writer gone) instead of a ConnectionError.
            self._errors += (RuntimeError, AttributeError)
        self._incr = self.client.register_script(_INCR)
        self._set_add = self.client.register_script(_SET_ADD)
        self._list_push = self.client.register_script(_LIST_PUSH)
        self._put_record = self.client.register_script(_PUT_RECORD)
        self._end_record = self.client.register_script(_END_RECORD)
        self._extend = self.client.register_script(_LOCK_EXTEND)
        self._release = self.client.register_script(_LOCK_RELEASE)
        self._acquire_script = self.client.register_script(_LOCK_ACQUIRE)
        self._swap_record = self.client.register_script(_SWAP_RECORD)
        # One Redis, or Sentinel's master: the hot path's record read and write go over one
        # pipelined connection (bridge.store.pipe), everything else through redis-py.
        self._pipe: Pipe | None = None
        if address.topology in ("single", "sentinel"):
            host, port = address.nodes[0]
            locate = None
            if self._sentinel is not None:
                assert address.service is not None
                locate = partial(self._sentinel.discover_master, address.service)
            self._pipe = Pipe(
                host,
                port,
                locate=locate,
                db=address.db,
                username=address.username,
                password=address.password.reveal() if address.password else None,
                tls=address.tls,
                ca_certs=address.ca_certs,
                timeout=timeout,
            )

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> RedisStore:
        """Build the store that ``[store]`` describes."""
        if settings.address is None:
            raise ConfigError("store.url: not a Redis URL")
        return cls(
            settings.address,
            prefix=settings.prefix,
            timeout=settings.timeout,
            lease=settings.lock_lease,
        )

    def _guard(self, *, timed: bool = True) -> _Guard:
        """Bound the enclosed Redis calls by the timeout (``timed``: the pipe bounds its own);
        turn any failure into a 503."""
        return _Guard(self, timed)

    # --- records ------------------------------------------------------------------------

    async def get(self, key: str) -> JSONObject | None:
        async with self._guard():
            raw = await self.client.get(key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:  # not JSON: nothing the bridge wrote
            return None
        return value if isinstance(value, dict) else None

    async def set(self, key: str, value: JSONObject, ttl: float) -> None:
        async with self._guard():
            await self.client.set(key, _dumps(value), px=_millis(ttl))

    async def add(self, key: str, value: JSONObject, ttl: float) -> bool:
        async with self._guard():
            return bool(await self.client.set(key, _dumps(value), px=_millis(ttl), nx=True))

    async def delete(self, key: str) -> None:
        async with self._guard():
            await self.client.delete(key)

    async def get_record(self, key: str) -> bytes | None:
        async with self._guard(timed=self._pipe is None):
            if self._pipe is not None:
                raw = await self._pipe.call(b"GET", key)
            else:
                raw = await self.client.get(key)
        if raw is None:
            return None
        return raw if isinstance(raw, bytes) else raw.encode("utf-8")

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
        keys = [key, tombstone] + ([fence.name] if fence is not None else [])
        args: list[bytes | str | int] = [
            value,
            _millis(ttl),
            fence.token if fence is not None else "",
            "1" if create else "0",
        ]
        async with self._guard():
            written = int(await self._put_record(keys=keys, args=args))
        if written < 0:
            log.warning("a lock holder lost its lease; its write was dropped")
            raise LeaseLost()
        return written == 1

    async def swap_record(
        self,
        key: str,
        expected: bytes,
        value: bytes,
        ttl: float,
        *,
        fence: Lease | None = None,
    ) -> bool | Changed:
        keys = [key] + ([fence.name] if fence is not None else [])
        args: list[bytes | str | int] = [
            value,
            _millis(ttl),
            hashlib.sha1(expected, usedforsecurity=False).hexdigest(),
            fence.token if fence is not None else "",
        ]
        async with self._guard(timed=self._pipe is None):
            if self._pipe is not None:
                # By its SHA; the pipe loads the text itself if Redis forgot it.
                sha = self._swap_record.sha
                outcome = await self._pipe.evalsha(sha, _SWAP_RECORD, keys, args)
            else:
                outcome = await self._swap_record(keys=keys, args=args)
        if isinstance(outcome, bytes):
            return Changed(outcome)
        if int(outcome) < 0:
            log.warning("a lock holder lost its lease; its write was dropped")
            raise LeaseLost()
        return int(outcome) == 1

    async def end_record(self, key: str, tombstone: str, ttl: float) -> bool:
        async with self._guard():
            return bool(await self._end_record(keys=[key, tombstone], args=[_millis(ttl)]))

    async def counter(self, key: str) -> int:
        async with self._guard():
            value = await self.client.get(key)
        try:
            return int(value) if value is not None else 0
        except ValueError:
            return 0

    async def incr(self, key: str, ttl: float) -> int:
        async with self._guard():
            value = await self._incr(keys=[key], args=[_millis(ttl)])
        return int(value)

    # --- sets (indexes) -------------------------------------------------------------------

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        async with self._guard():
            await self._set_add(keys=[key], args=[member, _millis(ttl)])

    async def set_remove(self, key: str, member: str) -> None:
        async with self._guard():
            await self.client.srem(key, member)  # Redis drops a set once it is empty

    async def set_members(self, key: str) -> builtins.set[str]:
        async with self._guard():
            members = await self.client.smembers(key)
        return {_text(m) for m in members}

    # --- capped lists (events) ------------------------------------------------------------

    async def list_push(self, key: str, value: JSONObject, max_len: int, ttl: float) -> None:
        async with self._guard():
            await self._list_push(keys=[key], args=[_dumps(value), max_len, _millis(ttl)])

    async def list_range(self, key: str, limit: int) -> list[JSONObject]:
        if limit <= 0:
            return []
        async with self._guard():
            items = await self.client.lrange(key, -limit, -1)
        return [json.loads(item) for item in reversed(items)]

    # --- locks ----------------------------------------------------------------------------

    @asynccontextmanager
    async def lock(self, name: str, *, wait: float) -> AsyncIterator[Lease]:
        token = token_urlsafe(16)
        waiters, wake = name + ":waiters", name + ":wake"  # the lock's hash tag, its slot
        await self._acquire(name, waiters, wake, token, wait)
        renewer = asyncio.create_task(self._keep(name, token))
        try:
            yield Lease(name, token)
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            try:
                async with self._guard():
                    await self._release(
                        keys=[name, waiters, wake], args=[token, _millis(self.lease)]
                    )
            except StoreUnavailable:
                # Not worth failing an answered request for: the lease lapses on its own.
                log.warning("could not release a lock; its lease will lapse")

    async def _acquire(self, name: str, waiters: str, wake: str, token: str, wait: float) -> None:
        """Take the lock, or wait to be woken by its release (BLPOP on the lock's wake list).

        A holder that died releases nothing: its lease lapses, and a waiter's BLPOP returns
        empty within half the store timeout, so it asks again.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        lease = _millis(self.lease)
        while True:
            async with self._guard():
                if await self._acquire_script(keys=[name, waiters], args=[token, lease]):
                    return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StoreUnavailable(BUSY)
            # Under the socket timeout, so a quiet wait is not taken for a dead connection.
            block = max(0.01, min(remaining, self.timeout / 2))
            async with self._guard():
                await self.client.blpop([wake], timeout=block)

    async def _keep(self, name: str, token: str) -> None:
        """Extend the lease every third of it while the holder works."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                async with self._guard():
                    held = await self._extend(keys=[name], args=[token, _millis(self.lease)])
            except StoreUnavailable:
                log.warning("could not renew a lock lease; will retry")
                continue
            if not held:
                log.warning("a lock lease lapsed before its holder finished")
                return

    # --- admin, health --------------------------------------------------------------------

    async def scan(self, pattern: str) -> AsyncIterator[str]:
        # redis-py's cluster client scans every master in turn; each step is bounded.
        keys = self.client.scan_iter(match=pattern, count=500)
        while True:
            async with self._guard():
                try:
                    key = await anext(keys)
                except StopAsyncIteration:
                    return
            yield _text(key)

    async def ping(self) -> bool:
        try:
            async with self._guard():
                return bool(await self.client.ping())
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        if self._pipe is not None:
            await self._pipe.close()
        with suppress(RedisError, RedisClusterException, OSError):
            await self.client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:  # Sentinel.aclose() is recent in redis-py
                with suppress(RedisError, OSError):
                    await sentinel.aclose()


def _dumps(value: JSONObject) -> str:
    return json.dumps(value, separators=(",", ":"))


def _millis(ttl: float) -> int:
    # Never zero or negative: SET PX refuses those.
    return max(1, int(ttl * 1000))


def _text(value: bytes | str) -> str:
    # The clients do not decode (values are JSON text; keys and members come back as bytes).
    return value.decode("utf-8") if isinstance(value, bytes) else value
