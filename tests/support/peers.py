"""A hostile peer on 127.0.0.1: a raw HTTP/1.1 server whose answers a test writes byte by byte.

Each path gets an :class:`Answer`: a head and a body, sent whole, dripped one byte per
``interval`` or repeated without end. Every connection is recorded with the request it carried
and whether the peer got to send its whole answer, so a test can tell a bridge that gave up
(the connection closed under the peer) from one that waited it out, without timing anything.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from support.live import free_port


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: bytes = b"{}"
    drip: float = 0.0  # seconds between single bytes of the body (0: all at once)
    endless: bool = False  # repeat ``body`` until the client goes away

    @classmethod
    def json(cls, value: Any, status: int = 200, **headers: str) -> Answer:
        return cls(
            status, {"Content-Type": "application/json", **headers}, json.dumps(value).encode()
        )

    @classmethod
    def gzipped(cls, value: Any) -> Answer:
        body = gzip.compress(json.dumps(value).encode())
        return cls(200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, body)


@dataclass
class Connection:
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    sent: int = 0  # body bytes written
    finished: bool = False  # the whole answer was written


class HostilePeer:
    """Serve ``routes`` (path -> Answer) on 127.0.0.1 from a thread with its own loop."""

    def __init__(self, routes: dict[str, Answer] | None = None) -> None:
        self.routes: dict[str, Answer] = dict(routes or {})
        self.connections: list[Connection] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HostilePeer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("hostile peer did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def on(self, path: str) -> list[Connection]:
        return [c for c in self.connections if c.path == path]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection()
        self.connections.append(conn)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            conn.path = lines[0].split(" ")[1].split("?")[0]
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    conn.headers[name.strip().lower()] = value.strip()
            length = int(conn.headers.get("content-length", "0"))
            conn.body = await reader.readexactly(length) if length else b""
            answer = self.routes.get(conn.path, Answer(404, {}, b""))
            await self._answer(conn, reader, writer, answer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: what the tests look for
        finally:
            writer.close()

    async def _answer(
        self,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        answer: Answer,
    ) -> None:
        headers = {"Connection": "close", **answer.headers}
        if not answer.endless:
            headers.setdefault("Content-Length", str(len(answer.body)))
        head = f"HTTP/1.1 {answer.status} X\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        writer.write(head.encode("latin-1") + b"\r\n")
        await writer.drain()
        if answer.endless:
            while not reader.at_eof():
                writer.write(answer.body)
                await writer.drain()
                conn.sent += len(answer.body)
            return
        elif answer.drip:
            for i in range(len(answer.body)):
                if reader.at_eof():
                    return
                writer.write(answer.body[i : i + 1])
                await writer.drain()
                conn.sent += 1
                await asyncio.sleep(answer.drip)  # the peer's own pace, not the test waiting
        else:
            writer.write(answer.body)
            await writer.drain()
            conn.sent = len(answer.body)
        conn.finished = True
