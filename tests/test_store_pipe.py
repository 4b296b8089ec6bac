"""The pipelined connection the Redis store's hot path uses, against a real redis-server.

Replies must reach their own callers whatever the interleaving (many in flight, replies split
over reads, callers that gave up), the connection must recover from a restart and a hang, and
it must authenticate and select the database as redis-py does (its TLS is tested with the
store's, in test_store_redis.py).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.errors import StoreUnavailable
from bridge.store.pipe import Pipe, _Reply, pack
from bridge.store.redis import RedisStore, parse_url
from support.app import RecordedTransport
from support.redis import RedisServer, redis_server  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

TIMEOUT = 0.5


@pytest.fixture
async def pipe(redis_server: RedisServer) -> AsyncIterator[Pipe]:  # noqa: F811
    made = Pipe("127.0.0.1", redis_server.port, timeout=TIMEOUT)
    yield made
    await made.close()


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:  # noqa: F811
    made = RedisStore(parse_url(redis_server.url), prefix="t", timeout=TIMEOUT)
    yield made
    await made.close()


def pipe_connections(server: RedisServer) -> int:
    """How many of Redis's clients are not the test's own look (CLIENT LIST, minus this one)."""
    with server.client() as client:
        return len(client.client_list()) - 1


def test_commands_are_packed_as_resp_bulk_strings() -> None:
    assert pack((b"GET", "k\u00e9", 12)) == b"*3\r\n$3\r\nGET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n12\r\n"


# One command for each kind of RESP2 reply the pipe reads, and what each must come back as.
EVERY_KIND: list[tuple[tuple[bytes | str | int, ...], Any]] = [
    ((b"SET", "k", b"a\r\nb"), b"OK"),  # simple string
    ((b"GET", "k"), b"a\r\nb"),  # bulk string with CRLF inside
    ((b"GET", "missing"), None),  # nil bulk string
    ((b"SET", "empty", b""), b"OK"),
    ((b"GET", "empty"), b""),  # empty bulk string
    ((b"INCR", "n"), 1),  # integer
    ((b"INCR", "k"), ResponseError),  # error
    (
        (b"EVAL", "return {1, 'two', {3, false}, redis.status_reply('FINE')}", 0),
        [1, b"two", [3, None], b"FINE"],
    ),  # nested arrays, with a nil inside
    ((b"EVAL", "return {}", 0), []),  # empty array
    ((b"EVALSHA", "0" * 40, 0), NoScriptError),
    ((b"PING",), b"PONG"),  # last: the end of the replies
]


def raw_replies(server: RedisServer, commands: list[tuple[bytes | str | int, ...]]) -> bytes:
    """The bytes a real Redis answers ``commands`` with (the last must be PING)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"".join(pack(c) for c in commands))
        received = b""
        while not received.endswith(b"+PONG\r\n"):
            chunk = sock.recv(65536)
            assert chunk, "Redis closed the connection"
            received += chunk
    return received


async def read_in_pieces(stream: bytes, cuts: list[int], count: int) -> list[Any]:
    """Feed ``stream`` to a connection's protocol cut at ``cuts``; return what its ``count``
    callers got (a value, or an exception's class)."""
    loop = asyncio.get_running_loop()
    reply = _Reply()
    callers = [loop.create_future() for _ in range(count)]
    reply.waiting.extend(callers)
    reply.deadlines.extend([loop.time() + 60] * count)
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if end > start:
            reply.data_received(stream[start:end])
    assert not reply.waiting and not reply.buffer and not reply.lost
    return [type(c.exception()) if c.exception() else c.result() for c in callers]


async def test_every_reply_split_at_every_byte_offset_reaches_its_caller_whole(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    stream = raw_replies(redis_server, [command for command, _ in EVERY_KIND])
    wanted = [expected for _, expected in EVERY_KIND]
    for offset in range(1, len(stream)):
        got = await read_in_pieces(stream, [offset], len(EVERY_KIND))
        assert got == wanted, f"split at byte {offset}"
    # And a byte at a time: every reply cut at every one of its offsets at once.
    assert await read_in_pieces(stream, list(range(1, len(stream))), len(EVERY_KIND)) == wanted


async def test_hundreds_in_flight_each_get_their_own_reply_on_one_connection(
    pipe: Pipe,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    with redis_server.client() as client:
        for i in range(400):
            # Some values are large, so replies arrive split over many reads.
            client.set(f"k{i}", (b"%d:" % i) * (20_000 if i % 50 == 0 else 1))
    replies = await asyncio.gather(*(pipe.call(b"GET", f"k{i}") for i in range(400)))
    for i, value in enumerate(replies):
        assert value == (b"%d:" % i) * (20_000 if i % 50 == 0 else 1)
    assert await pipe.call(b"GET", "missing") is None
    assert await pipe.call(b"INCR", "n") == 1
    assert await pipe.call(b"SET", "s", "v") == b"OK"
    assert pipe_connections(redis_server) == 1


async def test_the_commands_asked_in_one_turn_go_out_in_one_write(
    pipe: Pipe,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    assert await pipe.call(b"SET", "k", "v") == b"OK"  # the connection is open
    reply = pipe._reply
    assert reply is not None and reply.transport is not None
    writes: list[bytes] = []
    reply.transport = RecordedTransport(reply.transport, writes)  # type: ignore[assignment]
    replies = await asyncio.gather(*(pipe.call(b"GET", "k") for _ in range(100)))
    assert replies == [b"v"] * 100
    assert writes == [pack((b"GET", "k")) * 100]  # one write, the commands in the order asked
    assert await pipe.call(b"GET", "k") == b"v"
    assert len(writes) == 2


async def test_a_caller_that_gave_up_leaves_the_others_their_own_replies(
    pipe: Pipe,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    with redis_server.client() as client:
        for i in range(40):
            client.set(f"k{i}", i)
    assert await pipe.call(b"GET", "k0") == b"0"  # the connection is open
    calls = [asyncio.ensure_future(pipe.call(b"GET", f"k{i}")) for i in range(40)]
    await asyncio.sleep(0)  # every command is on the wire, no reply read yet
    for call in calls[::2]:
        call.cancel()  # a visitor left: its request is cancelled, not the connection
    for i, call in enumerate(calls):
        if i % 2:
            assert await call == b"%d" % i
        else:
            with pytest.raises(asyncio.CancelledError):
                await call
    assert await pipe.call(b"GET", "k7") == b"7"
    assert pipe_connections(redis_server) == 1  # still the same one connection


async def test_an_error_reply_fails_its_own_caller_only(pipe: Pipe) -> None:
    await pipe.call(b"SET", "text", "v")
    good, bad, after = await asyncio.gather(
        pipe.call(b"GET", "text"),
        pipe.call(b"INCR", "text"),
        pipe.call(b"GET", "text"),
        return_exceptions=True,
    )
    assert good == b"v" and after == b"v"
    assert isinstance(bad, ResponseError)


async def test_a_script_redis_forgot_is_loaded_again(
    store: RedisStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    assert await store.put_record("t:r:{a}", b"one", 30, tombstone="t:e:{a}", create=True)
    with redis_server.client() as client:
        client.script_flush()
    assert await store.swap_record("t:r:{a}", b"one", b"two", 30) is True
    assert await store.get_record("t:r:{a}") == b"two"


async def test_the_hot_path_uses_one_connection_however_many_requests(
    store: RedisStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    assert await store.put_record("t:r:{a}", b"v0", 30, tombstone="t:e:{a}", create=True)
    with redis_server.client() as client:
        before = client.info("clients")["connected_clients"]
    reads = await asyncio.gather(*(store.get_record("t:r:{a}") for _ in range(100)))
    assert reads == [b"v0"] * 100
    with redis_server.client() as client:
        after = client.info("clients")["connected_clients"]
    assert after - before == 1  # the pipe's, besides redis-py's pooled one for put_record


async def test_a_restarted_redis_is_reconnected_to(
    store: RedisStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    assert await store.put_record("t:r:{a}", b"v", 30, tombstone="t:e:{a}", create=True)
    assert await store.get_record("t:r:{a}") == b"v"
    redis_server.stop()
    with pytest.raises(StoreUnavailable):
        await store.get_record("t:r:{a}")
    redis_server.start()
    assert await store.get_record("t:r:{a}") is None  # no persistence: a fresh Redis
    assert await store.put_record("t:r:{a}", b"w", 30, tombstone="t:e:{a}", create=True)
    assert await store.swap_record("t:r:{a}", b"w", b"x", 30) is True


async def test_a_hung_redis_is_bounded_and_its_late_replies_reach_nobody(
    store: RedisStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    for name in ("a", "b"):
        key = f"t:r:{{{name}}}"
        assert await store.put_record(key, name.encode(), 30, tombstone="t:e:x", create=True)
    redis_server.pause()
    try:
        started = time.monotonic()
        calls = [store.get_record("t:r:{a}") for _ in range(20)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, StoreUnavailable) for o in outcomes)
        assert time.monotonic() - started < TIMEOUT + 0.5
    finally:
        redis_server.resume()
    # The frozen server's twenty replies to "a" must not answer these.
    assert await store.get_record("t:r:{b}") == b"b"
    assert await asyncio.gather(*(store.get_record("t:r:{b}") for _ in range(5))) == [b"b"] * 5


async def test_each_reply_is_due_its_own_timeout_after_its_call(
    pipe: Pipe,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # One timer watches the oldest reply owed. Here it is first set for a reply that comes at
    # once; when it fires, the call asked later (Redis hung meanwhile) is owed, due later: the
    # timer waits for that one's own deadline, then closes the connection and fails it.
    assert await pipe.call(b"PING") == b"PONG"  # the timer, set for this reply's deadline
    await asyncio.sleep(TIMEOUT / 2)
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):  # not wait_for's own: the pipe's, in time
            await asyncio.wait_for(pipe.call(b"GET", "k"), TIMEOUT * 4)
        took = time.monotonic() - started
    finally:
        redis_server.resume()
    assert TIMEOUT - 0.05 <= took < TIMEOUT + 0.3  # its own deadline: not the first call's
    assert await pipe.call(b"PING") == b"PONG"  # a fresh connection
    assert pipe_connections(redis_server) == 1  # the hung one was closed


async def test_a_server_that_accepts_and_never_answers_is_bounded(tmp_path: Path) -> None:
    # A listener that never replies: a connection whose set-up (AUTH) never finishes is
    # closed, and a later call opens another, rather than every caller waiting on it.
    accepted: list[asyncio.StreamWriter] = []
    closed: list[bool] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while await reader.read(65536):
            pass
        closed.append(True)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(parse_url(f"redis://:pw@127.0.0.1:{port}/0"), timeout=0.3)
    try:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.get_record("t:r:{a}")
            assert time.monotonic() - started < 0.8
            await asyncio.sleep(0.1)  # past the opening's own deadline
        assert len(accepted) == 2 and len(closed) == 2
    finally:
        await store.close()
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()


@pytest.fixture
def acl_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path, password="admin-pass").start()
    with server.client() as client:
        client.acl_setuser(
            "bridge", enabled=True, passwords=["+user-pass"], keys=["t:*"], commands=["+@all"]
        )
    yield server
    server.stop()


async def test_it_authenticates_as_a_user_and_selects_the_database(acl_redis: RedisServer) -> None:
    store = RedisStore(parse_url(f"redis://bridge:user-pass@127.0.0.1:{acl_redis.port}/3"))
    try:
        assert await store.put_record("t:r:{a}", b"v", 30, tombstone="t:e:{a}", create=True)
        assert await store.swap_record("t:r:{a}", b"v", b"w", 30) is True
        assert await store.get_record("t:r:{a}") == b"w"
    finally:
        await store.close()
    with redis.Redis(port=acl_redis.port, password="admin-pass", db=3) as client:
        assert client.get("t:r:{a}") == b"w"
    with redis.Redis(port=acl_redis.port, password="admin-pass", db=0) as client:
        assert client.get("t:r:{a}") is None


async def test_a_wrong_password_fails_without_saying_it(acl_redis: RedisServer) -> None:
    pipe = Pipe("127.0.0.1", acl_redis.port, username="bridge", password="not-it", timeout=1)
    try:
        with pytest.raises(AuthenticationError) as caught:
            await pipe.call(b"GET", "t:k")
        assert "not-it" not in str(caught.value) and "not-it" not in repr(pipe)
    finally:
        await pipe.close()
    store = RedisStore(parse_url(f"redis://bridge:not-it@127.0.0.1:{acl_redis.port}/0"))
    try:
        with pytest.raises(StoreUnavailable) as unavailable:
            await store.get_record("t:r:{a}")
        assert "not-it" not in str(unavailable.value)
    finally:
        await store.close()


async def test_a_closed_connection_fails_its_callers_and_the_next_call_reconnects(
    pipe: Pipe,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    assert await pipe.call(b"SET", "k", "v") == b"OK"
    with redis_server.client() as client:
        client.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(RedisConnectionError):
        # The kill may land before or during this call; either way the next one reconnects.
        await asyncio.wait_for(pipe.call(b"BLPOP", "nothing", 5), 2)
    assert await pipe.call(b"GET", "k") == b"v"


# --- Sentinel: where the master is ----------------------------------------------------------


async def test_a_demoted_master_is_left_for_wherever_the_master_is_now(tmp_path: Path) -> None:
    # As after a failover: the server the pipe is connected to becomes a replica (it answers
    # a write with READONLY), and the sentinels now name another server as the master.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = RedisServer(tmp_path / "a").start()
    second = RedisServer(tmp_path / "b").start()
    master = [first.port]
    asked: list[int] = []

    async def locate() -> tuple[str, int]:
        asked.append(master[0])
        return "127.0.0.1", master[0]

    pipe = Pipe("unused", 0, locate=locate, timeout=1)
    try:
        assert await pipe.call(b"SET", "k", "on-first") == b"OK"
        with first.client() as client:
            client.replicaof("127.0.0.1", second.port)
        master[0] = second.port
        with pytest.raises(ResponseError, match="READONLY"):
            await pipe.call(b"SET", "k", "late")
        assert await pipe.call(b"SET", "k", "on-second") == b"OK"
        assert asked == [first.port, second.port]  # asked again once, on reconnecting
        with second.client() as client:
            assert client.get("k") == b"on-second"
    finally:
        await pipe.close()
        first.stop()
        second.stop()


async def test_no_master_known_is_store_unavailable_and_found_when_it_is(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    known: list[bool] = [False]

    async def locate() -> tuple[str, int]:
        if not known[0]:
            raise RedisConnectionError("No master found for 'svc'")
        return "127.0.0.1", server.port

    store = RedisStore(parse_url(f"redis://127.0.0.1:{server.port}/0"), timeout=TIMEOUT)
    assert store._pipe is not None
    store._pipe.locate = locate  # as the Sentinel store's pipe asks the sentinels
    try:
        with pytest.raises(StoreUnavailable):
            await store.get_record("t:r:{a}")
        known[0] = True
        assert await store.get_record("t:r:{a}") is None
    finally:
        await store.close()
        server.stop()


async def test_one_redis_and_sentinel_use_the_pipe_and_a_cluster_does_not() -> None:
    single = RedisStore(parse_url("redis://127.0.0.1:1/0"))
    sentinel = RedisStore(parse_url("redis+sentinel://127.0.0.1:1/svc/0"))
    cluster = RedisStore(parse_url("redis+cluster://127.0.0.1:1"))
    try:
        assert single._pipe is not None and single._pipe.locate is None
        assert sentinel._pipe is not None and sentinel._pipe.locate is not None
        assert cluster._pipe is None  # redis-py's cluster client follows MOVED and ASK
    finally:
        for store in (single, sentinel, cluster):
            await store.close()


async def test_closing_while_a_connection_opens_leaves_none_open(tmp_path: Path) -> None:
    # The store closes at shutdown; an opening still waiting (here on AUTH) must not leave a
    # connection behind, and nothing is sent once closed.
    accepted: list[asyncio.StreamWriter] = []
    arrived, ended = asyncio.Event(), asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        arrived.set()
        while await reader.read(65536):
            pass
        ended.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = Pipe("127.0.0.1", port, password="pw", timeout=5)
    call = asyncio.ensure_future(pipe.call(b"GET", "k"))
    try:
        await asyncio.wait_for(arrived.wait(), 2)
        await pipe.close()
        with pytest.raises((asyncio.CancelledError, RedisConnectionError)):
            await call
        await asyncio.wait_for(ended.wait(), 2)  # the half-open connection was closed
        with pytest.raises(RedisConnectionError):
            await pipe.call(b"GET", "k")
    finally:
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()
