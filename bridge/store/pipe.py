"""One pipelined connection to one Redis, for the token hot path's record read and write.

redis-py takes a pooled connection for each command, wraps the call in its retry and its
own locks, and reads the reply through a stream reader: on this machine that is the larger
part of what a Redis-backed token request costs beyond the memory store's. This connection
writes the commands asked in a turn of the event loop together at its end, all on one socket,
and hands replies to their callers in the order they were sent (Redis answers one connection's
commands in order): no pool, no lock, one write wakes Redis once for every request of the turn,
and one read of the socket wakes every caller whose reply it holds. ``bench/redis_clients.py``
measures it against redis-py (with hiredis) and coredis on the bridge's Redis rows: it is kept
only while it wins by a margin worth its upkeep.

Only commands that answer at once go here: a blocking one (``BLPOP``) would hold up every
reply behind it, so the lock's waits stay on redis-py. It speaks RESP2 with one Redis, or with
a Sentinel-managed master, which it asks the sentinels for (``locate``) each time it connects;
it authenticates and selects the database as redis-py does, and speaks TLS with the same checks
(the CA given, or the system's, and the host name). A connection that closes fails every caller
waiting on it with :class:`redis.exceptions.ConnectionError`. Each command's reply is due
``timeout`` seconds after its caller asked (connecting included): one timer per connection
watches the oldest reply still owed, and when one is late the connection is closed and every
caller waiting on it fails with :class:`redis.exceptions.TimeoutError` (replies come in order,
so nothing behind a late one can come sooner). That costs a command a clock reading, where an
``asyncio.timeout`` per call cost 6-7 us on uvloop. A ``READONLY`` answer (the server it reached
is a replica now, after a failover) closes it too; the next command opens a fresh one. Errors
are redis-py's classes, so the store's guard treats both clients' failures alike.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int
_CRLF = b"\r\n"


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


class _Reply(asyncio.Protocol):
    """The connection's protocol: a queue of callers, served in order as replies arrive."""

    def __init__(self) -> None:
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.deadlines: deque[float] = deque()  # when each waiting caller's reply is due
        self.timer: asyncio.TimerHandle | None = None  # set for the oldest reply owed
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # commands asked this turn, written at its end
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection's

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        position = 0
        while position < len(buffer):
            try:
                value, position = _parse(buffer, position)
            except _Incomplete:
                break
            except ValueError:  # not RESP: nothing more on this connection can be trusted
                self.close(RedisConnectionError("Redis sent a reply that is not RESP"))
                return
            if not self.waiting:
                self.close(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            caller = self.waiting.popleft()
            self.deadlines.popleft()
            if caller.done():  # its caller left (a cancelled request): the reply is dropped
                continue
            if isinstance(value, RedisError):
                caller.set_exception(value)
                if isinstance(value, ReadOnlyError):
                    # A replica now (demoted in a failover): find the master again.
                    self.close(RedisConnectionError("Redis answered as a replica"))
                    return
            else:
                caller.set_result(value)
        del buffer[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError("Redis closed the connection"))

    def fail(self, error: Exception) -> None:
        self.lost = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.deadlines.clear()
        while self.waiting:
            caller = self.waiting.popleft()
            if not caller.done():
                caller.set_exception(error)

    def close(self, error: Exception) -> None:
        self.fail(error)
        self.pending.clear()
        if self.transport is not None:
            self.transport.abort()

    def send(self, packed: bytes, deadline: float) -> asyncio.Future[Any]:
        """Queue a command whose reply is due by ``deadline`` (the loop's clock)."""
        # The commands of one turn go out together at its end: one write and one wake-up of
        # Redis however many requests asked; their replies are read next turn anyway.
        loop = asyncio.get_running_loop()
        caller = loop.create_future()
        self.waiting.append(caller)
        self.deadlines.append(deadline)
        if self.timer is None:
            self.timer = loop.call_at(deadline, self.expire)
        if not self.pending:
            loop.call_soon(self.flush)
        self.pending.append(packed)
        return caller

    def expire(self) -> None:
        """The timer: close the connection if the oldest reply owed is late, else wait for it."""
        self.timer = None
        if not self.deadlines:
            return
        loop = asyncio.get_running_loop()
        if self.deadlines[0] <= loop.time():
            self.close(RedisTimeoutError("Redis did not answer in time"))
        else:  # answered meanwhile: watch the oldest still owed (the clock may also run early)
            self.timer = loop.call_at(self.deadlines[0], self.expire)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        transport = self.transport
        if pending and transport is not None and not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))


class Pipe:
    """A lazily opened, pipelined connection to the Redis at ``host:port``, or wherever
    ``locate`` (asked at each connection) says the master is."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        locate: Callable[[], Awaitable[tuple[str, int]]] | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_certs: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.locate = locate
        self.timeout = timeout  # from a call to its reply; also bounds an opening on its own
        self._auth: tuple[str, ...] = ()
        if password is not None:
            self._auth = (username, password) if username else (password,)
        self._tls: ssl.SSLContext | None = None
        if tls:
            # As redis-py's rediss://: the certificate and its host name are checked.
            self._tls = ssl.create_default_context(cafile=ca_certs)
        self._reply: _Reply | None = None
        self._opening: asyncio.Future[_Reply] | None = None
        self._closed = False

    def __repr__(self) -> str:  # never the password
        return f"Pipe({self.host}:{self.port}/{self.db})"

    async def call(self, *args: Arg) -> Any:
        """Send one command; return its reply (bytes, int, None, or a list of those) within
        ``timeout`` seconds, or raise a redis-py error (TimeoutError when it is late)."""
        if self._closed:
            raise RedisConnectionError("The connection to Redis was closed")
        deadline = asyncio.get_running_loop().time() + self.timeout
        reply = self._reply
        if reply is None or reply.lost or reply.transport is None or reply.transport.is_closing():
            reply = await self._connection()
        return await reply.send(pack(args), deadline)

    async def evalsha(self, sha: str, script: Arg, keys: list[str], args: list[Arg]) -> Any:
        """Run a Lua script by its SHA-1, loading it first if this Redis does not know it."""
        try:
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed Redis forgot the script
            await self.call(b"SCRIPT", b"LOAD", script)
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)

    def drop(self) -> None:
        """Close the connection (its callers fail); the next command opens a fresh one."""
        reply, self._reply = self._reply, None
        if reply is not None:
            reply.close(RedisConnectionError("The connection to Redis was dropped"))

    async def close(self) -> None:
        """Close for good: the connection, and one still being opened."""
        self._closed = True
        opening = self._opening
        if opening is not None:
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
        self.drop()

    async def _connection(self) -> _Reply:
        # One opening at a time, however many callers arrive meanwhile; a caller that gives
        # up does not cancel it for the others.
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    def _opened(self, opening: asyncio.Future[_Reply]) -> None:
        self._opening = None
        if opening.cancelled():
            return
        if opening.exception() is None:
            if self._closed:  # closed while it opened
                opening.result().close(RedisConnectionError("Closed"))
            else:
                self._reply = opening.result()

    async def _open(self) -> _Reply:
        loop = asyncio.get_running_loop()
        reply: _Reply | None = None
        try:
            async with asyncio.timeout(self.timeout):
                host, port = self.host, self.port
                if self.locate is not None:
                    host, port = await self.locate()
                _, reply = await loop.create_connection(
                    _Reply,
                    host,
                    port,
                    ssl=self._tls,
                    server_hostname=host if self._tls is not None else None,
                )
                deadline = loop.time() + self.timeout  # and the opening's own, around it
                if self._auth:
                    await reply.send(pack((b"AUTH", *self._auth)), deadline)
                if self.db:
                    await reply.send(pack((b"SELECT", self.db)), deadline)
        except BaseException:
            if reply is not None:
                reply.close(RedisConnectionError("Redis refused the connection's set-up"))
            raise
        return reply


def pack(args: tuple[Arg, ...]) -> bytes:
    """Encode a command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def _parse(buffer: bytearray, position: int) -> tuple[Any, int]:
    """Read one RESP2 reply at ``position``; return it and where the next one starts."""
    end = buffer.find(_CRLF, position)
    if end < 0:
        raise _Incomplete()
    kind, line, after = buffer[position], bytes(buffer[position + 1 : end]), end + 2
    if kind == 36:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            raise _Incomplete()
        return bytes(buffer[after : after + size]), after + size + 2
    if kind == 58:  # : integer
        return int(line), after
    if kind == 43:  # + simple string
        return line, after
    if kind == 45:  # - error
        return _error(line.decode("utf-8", "replace")), after
    if kind == 42:  # * array
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = _parse(buffer, after)
            items.append(item)
        return items, after
    raise ValueError("unknown RESP type")


def _error(text: str) -> RedisError:
    code = text.split(" ", 1)[0]
    if code == "NOSCRIPT":
        return NoScriptError(text)
    if code in ("NOAUTH", "WRONGPASS") or text.startswith("ERR invalid password"):
        return AuthenticationError(text)
    if code == "READONLY":
        return ReadOnlyError(text)
    return ResponseError(text)
