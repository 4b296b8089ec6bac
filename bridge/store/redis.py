"""The shared store: Redis through aiocache, for several bridge instances behind a balancer.

Records go through aiocache's ``RedisCache`` (JSON values, one key each, written with one
``SET ... PX``: a session record is never half-written). What aiocache lacks (sets, capped
lists, SCAN, atomic compare-and-set scripts) goes to the redis-py asyncio client it wraps.

Every operation is bounded by ``[store] timeout``; every backend failure (refused, reset, slow,
a Redis error) becomes :class:`~bridge.errors.StoreUnavailable` (503), and the connection pool
reconnects by itself once Redis is back.

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
import logging
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from aiocache import RedisCache
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bridge.errors import ConfigError, LeaseLost, StoreUnavailable
from bridge.secret import Secret
from bridge.settings import StoreSettings
from bridge.store.base import Lease, Store

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
_LOCK_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is and how to reach it, from a ``redis://`` or ``rediss://`` URL."""

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    ca_certs: str | None = None


def parse_url(url: str) -> RedisAddress:
    """Parse ``redis[s]://[[user]:password@]host[:port][/db][?ssl_ca_certs=path]``."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError("store.url: not a valid redis:// URL") from exc
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError("store.url: must start with redis:// or rediss://")
    if not parts.hostname:
        raise ConfigError("store.url: name the Redis host (redis://host:6379/0)")
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise ConfigError("store.url: the path must be a database number (/0)")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"ssl_ca_certs"}
    if unknown:
        raise ConfigError(f"store.url: unknown option {sorted(unknown)[0]!r}")
    ca_certs = query.get("ssl_ca_certs", [""])[-1] or None
    if ca_certs and parts.scheme != "rediss":
        raise ConfigError("store.url: ssl_ca_certs needs rediss://")
    return RedisAddress(
        host=parts.hostname,
        port=port,
        db=int(db_text),
        username=unquote(parts.username) if parts.username else None,
        password=Secret(unquote(parts.password)) if parts.password else None,
        tls=parts.scheme == "rediss",
        ca_certs=ca_certs,
    )


class RedisStore(Store):
    """Records, indexes, events and leased locks in one Redis, shared by every instance."""

    def __init__(
        self,
        address: RedisAddress,
        *,
        prefix: str = "sbridge",
        timeout: float = 2.0,
        lease: float = 10.0,
    ) -> None:
        super().__init__(prefix)
        self.timeout = timeout
        self.lease = lease
        self._failing = False
        pool_kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            # One immediate retry on a fresh connection: after Redis restarts, every pooled
            # connection is dead and the first command on each would otherwise fail.
            "retry": Retry(NoBackoff(), 1),
        }
        if address.username:
            pool_kwargs["username"] = address.username
        if address.ca_certs:
            pool_kwargs["ssl_ca_certs"] = address.ca_certs
        # Keys arrive already namespaced by Store.key(), so aiocache adds no namespace; its
        # own timeout is off because _guard() bounds every call, aiocache's and raw ones alike.
        self.cache = RedisCache(
            endpoint=address.host,
            port=address.port,
            db=address.db,
            password=address.password.reveal() if address.password else None,
            ssl=address.tls,
            timeout=None,
            create_connection_timeout=timeout,
            connection_pool_kwargs=pool_kwargs,
        )
        self.client: Redis = self.cache.client
        self._incr = self.client.register_script(_INCR)
        self._set_add = self.client.register_script(_SET_ADD)
        self._put_record = self.client.register_script(_PUT_RECORD)
        self._end_record = self.client.register_script(_END_RECORD)
        self._extend = self.client.register_script(_LOCK_EXTEND)
        self._release = self.client.register_script(_LOCK_RELEASE)

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> RedisStore:
        """Build the store that ``[store]`` describes."""
        return cls(
            parse_url(settings.url),
            prefix=settings.prefix,
            timeout=settings.timeout,
            lease=settings.lock_lease,
        )

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Bound the enclosed Redis calls by the timeout; turn any failure into a 503."""
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except (RedisError, OSError, TimeoutError) as exc:
            # One line when an outage starts, not one per request; the type only, because a
            # Redis error's text may quote a value.
            if not self._failing:
                self._failing = True
                log.warning("redis unavailable", extra={"fields": {"exc_type": type(exc).__name__}})
            raise StoreUnavailable() from exc
        if self._failing:
            self._failing = False
            log.warning("redis available again")

    # --- records ------------------------------------------------------------------------

    async def get(self, key: str) -> dict[str, Any] | None:
        async with self._guard():
            try:
                value = await self.cache.get(key)
            except ValueError:  # not JSON: nothing the bridge wrote
                return None
        return value if isinstance(value, dict) else None

    async def set(self, key: str, value: dict[str, Any], ttl: float) -> None:
        async with self._guard():
            await self.cache.set(key, value, ttl=_seconds(ttl))

    async def add(self, key: str, value: dict[str, Any], ttl: float) -> bool:
        async with self._guard():
            try:
                await self.cache.add(key, value, ttl=_seconds(ttl))
            except ValueError:  # aiocache's way of saying the key exists
                return False
        return True

    async def delete(self, key: str) -> None:
        async with self._guard():
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
        keys = [key, tombstone] + ([fence.name] if fence is not None else [])
        args = [
            self.cache.serializer.dumps(value),
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

    async def list_push(self, key: str, value: dict[str, Any], max_len: int, ttl: float) -> None:
        data = self.cache.serializer.dumps(value)
        async with self._guard(), self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, data)
            pipe.ltrim(key, -max_len, -1)
            pipe.pexpire(key, _millis(ttl))
            await pipe.execute()

    async def list_range(self, key: str, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        async with self._guard():
            items = await self.client.lrange(key, -limit, -1)
        loads = self.cache.serializer.loads
        return [loads(_text(item)) for item in reversed(items)]

    # --- locks ----------------------------------------------------------------------------

    @asynccontextmanager
    async def lock(self, name: str, *, wait: float) -> AsyncIterator[Lease]:
        token = secrets.token_urlsafe(16)
        await self._acquire(name, token, wait)
        renewer = asyncio.create_task(self._keep(name, token))
        try:
            yield Lease(name, token)
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            try:
                async with self._guard():
                    await self._release(keys=[name], args=[token])
            except StoreUnavailable:
                # Not worth failing an answered request for: the lease lapses on its own.
                log.warning("could not release a lock; its lease will lapse")

    async def _acquire(self, name: str, token: str, wait: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = 0.005
        while True:
            async with self._guard():
                if await self.client.set(name, token, nx=True, px=_millis(self.lease)):
                    return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StoreUnavailable(BUSY)
            # Jitter keeps waiters from polling in lockstep; the cap keeps hand-over quick.
            await asyncio.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 0.05)

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
        cursor = 0
        while True:
            async with self._guard():
                cursor, keys = await self.client.scan(cursor, match=pattern, count=500)
            for key in keys:
                yield _text(key)
            if cursor == 0:
                return

    async def ping(self) -> bool:
        try:
            async with self._guard():
                return bool(await self.client.ping())
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        with suppress(RedisError, OSError):
            await self.client.aclose()


def _seconds(ttl: float) -> float:
    # aiocache sends a float TTL as milliseconds (PSETEX); never zero or negative.
    return max(0.001, float(ttl))


def _millis(ttl: float) -> int:
    return max(1, int(ttl * 1000))


def _text(value: bytes | str) -> str:
    # The pool does not decode (aiocache's choice), so members and keys come back as bytes.
    return value.decode("utf-8") if isinstance(value, bytes) else value
