"""uvicorn as the bridge runs it (bridge/serving.py): answers written once per turn of the loop.

A real uvicorn server in the test's loop, real sockets; the connections' own transports record
what they are asked to write (the batch's only way out), so each test sees the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bridge import turns
from bridge.cli import _serve_uvicorn
from conftest import RecordedTransport, free_port

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.writes: list[list[bytes]] = []  # per connection, in the order they were made
        self.flushed: list[int] = []  # how many connections each end-of-turn flush wrote
        self.release = asyncio.Event()

    async def app(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if path == "/wait":
            await self.release.wait()
        head = [(b"content-type", b"text/plain")]
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": head})
            for i in range(10):  # 200 KB in ten chunks, never yielding to the loop
                chunk = bytes([65 + i]) * 20_000
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = f"answer to {path}".encode()
        head.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": body})

    async def read_answer(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )  # fmt: skip
        return head, await reader.readexactly(length)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    served = Server(free_port())
    made = turns.BatchedTransport.__init__

    def recording(self: turns.BatchedTransport, transport: Any, batch: Any) -> None:
        served.writes.append([])
        made(self, RecordedTransport(transport, served.writes[-1]), batch)  # type: ignore[arg-type]

    flush = turns.WriteBatch.flush

    def counted(self: turns.WriteBatch) -> None:
        served.flushed.append(len(self.pending))
        flush(self)

    monkeypatch.setattr(turns.BatchedTransport, "__init__", recording)
    monkeypatch.setattr(turns.WriteBatch, "flush", counted)
    stop = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        await served.app(scope, receive, send)  # a function: uvicorn takes it for ASGI 3

    task = asyncio.ensure_future(_serve_uvicorn(app, "127.0.0.1", served.port, shutdown=stop))
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        await close(writer)
        break
    try:
        yield served
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def get(path: str, *extra: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *extra, "", ""]).encode()


async def test_each_answer_goes_out_in_one_write(server: Server) -> None:
    reader, writer = await connect(server)
    for i in range(3):
        writer.write(get(f"/one/{i}"))
        head, body = await server.read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert body == f"answer to /one/{i}".encode()
    await close(writer)
    # The head and the body of each answer in one write: three answers, three writes.
    assert [len(w) for w in server.writes[1:]] == [3]
    assert all(w.startswith(b"HTTP/1.1 200 ") and w.endswith(b"answer to /one/" + bytes([48 + i]))
               for i, w in enumerate(server.writes[1]))  # fmt: skip


async def test_the_answers_of_one_turn_go_out_in_one_flush(server: Server) -> None:
    clients = [await connect(server) for _ in range(20)]
    for i, (_, writer) in enumerate(clients):
        writer.write(get(f"/many/{i}"))  # all sent before the server reads any
    answers = [await server.read_answer(reader) for reader, _ in clients]
    assert [body for _, body in answers] == [f"answer to /many/{i}".encode() for i in range(20)]
    # Read in the same turn, answered in the next, written together at its end.
    assert max(server.flushed) == 20
    for _, writer in clients:
        await close(writer)


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(b"".join(get(f"/pipe/{i}") for i in range(5)))
    answers = [await server.read_answer(reader) for _ in range(5)]
    assert [body for _, body in answers] == [f"answer to /pipe/{i}".encode() for i in range(5)]
    await close(writer)


async def test_an_answer_that_closes_is_written_before_the_close(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(get("/last", "Connection: close"))
    head, body = await server.read_answer(reader)
    assert b"connection: close" in head.lower()
    assert body == b"answer to /last"
    assert await reader.read() == b""  # then the server closed it
    await close(writer)


async def test_a_long_streamed_answer_is_written_as_it_grows(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(get("/stream"))
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        data += await reader.read(65536)
    body = b"".join(data.split(b"\r\n")[1::2])  # the chunks' data, between their sizes
    assert body == b"".join(bytes([65 + i]) * 20_000 for i in range(10))
    writes = server.writes[1]
    # Held at most until 64 KiB had gathered, then written; never the whole 200 KB at once.
    assert len(writes) >= 3
    assert max(len(w) for w in writes) <= turns.MAX_PENDING_BYTES + 20_100
    await close(writer)


async def test_a_client_that_left_leaves_nothing_waiting(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(get("/wait"))
    await asyncio.sleep(0.1)  # the request is in, waiting
    await close(writer)
    await asyncio.sleep(0.1)  # the server saw the connection go
    server.release.set()
    await asyncio.sleep(0.1)
    batch = turns.batch_for(asyncio.get_running_loop())
    assert batch.pending == {}
    assert batch.sizes == {}
    # The others are still served.
    reader, writer = await connect(server)
    writer.write(get("/after"))
    assert (await server.read_answer(reader))[1] == b"answer to /after"
    await close(writer)


async def test_a_connection_that_cannot_be_written_leaves_the_others_answered(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = [await connect(server) for _ in range(3)]
    write = RecordedTransport.write
    failed: list[bytes] = []

    def first_fails(self: RecordedTransport, data: bytes) -> None:
        if not failed:
            failed.append(data)
            raise RuntimeError("this connection is broken")
        write(self, data)

    monkeypatch.setattr(RecordedTransport, "write", first_fails)
    for i, (_, writer) in enumerate(clients):
        writer.write(get(f"/many/{i}"))  # answered in one turn, written by one flush
    outcomes = []
    for reader, _ in clients:
        try:
            outcomes.append((await asyncio.wait_for(server.read_answer(reader), 5))[1])
        except (asyncio.IncompleteReadError, ConnectionError):
            outcomes.append(b"closed")
    assert failed and max(server.flushed) == 3
    # The broken one is closed; the flush went on to the others.
    assert outcomes.count(b"closed") == 1
    assert all(o in (b"closed", f"answer to /many/{i}".encode()) for i, o in enumerate(outcomes))
    for _, writer in clients:
        await close(writer)


def test_a_loop_that_ended_leaves_no_batch_behind() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    ended: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(conn.recv(1))

    async def one_write() -> None:
        loop = asyncio.get_running_loop()
        ended.append(weakref.ref(loop))
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        batched = turns.BatchedTransport(writer.transport, turns.batch_for(loop))  # type: ignore[arg-type]
        batched.write(b"x")  # written at the end of this turn
        assert await reader.readexactly(1) == b"x"  # and echoed back
        await close(writer)

    thread = threading.Thread(target=echo)
    thread.start()
    asyncio.run(one_write())
    thread.join(5)
    listener.close()
    gc.collect()
    assert ended[0]() is None  # the loop is gone, and its batch with it
