"""What the bridge adds to uvicorn: a cap on a request head, and answers written together.

hypercorn (``h11_max_incomplete_size``) and uvicorn's h11 parser refuse a request whose head
keeps growing; uvicorn's faster httptools parser has no such cap and buffers a header of any
size. :class:`BoundedHttpToolsProtocol` counts the bytes of a head still incomplete after each
read and answers 431 and closes once they pass the cap, so at most one read beyond it is held.

Its connections also write through :class:`WriteBatch`: what the requests answered in one turn
of the event loop goes out at the end of that turn, each connection's bytes in one write. The
bytes and their order on each connection are unchanged; the answer waits only for the rest of
the turn. Each write to a peer on this machine (nginx in front, a client on loopback) wakes that
peer, and on a virtual machine a wake-up of an idle CPU costs more than the write itself: one
answer written as soon as it is ready costs two of them (the head, then the body), while a turn's
answers written together wake the peer once and find it awake for the rest.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: 30\r\n\r\n"
    b'{"error":"request_too_large"}\n'
)


log = logging.getLogger("bridge.serving")

# A connection whose pending bytes pass this is written at once (a long streamed answer).
MAX_PENDING_BYTES = 64 * 1024


class WriteBatch:
    """The bytes the loop's connections wrote this turn, written at the end of the turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[asyncio.Transport, list[bytes]] = {}
        self.sizes: dict[asyncio.Transport, int] = {}

    def add(self, transport: asyncio.Transport, data: bytes) -> None:
        chunks = self.pending.get(transport)
        if chunks is None:
            if not self.pending:
                self.loop.call_soon(self.flush)
            self.pending[transport] = [data]
            self.sizes[transport] = len(data)
            return
        chunks.append(data)
        self.sizes[transport] += len(data)
        if self.sizes[transport] > MAX_PENDING_BYTES:
            self.flush_one(transport)

    def flush_one(self, transport: asyncio.Transport) -> None:
        """Write ``transport``'s pending bytes now (before it closes, or once they are many)."""
        chunks = self.pending.pop(transport, None)
        self.sizes.pop(transport, None)
        if chunks and not transport.is_closing():
            transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def drop(self, transport: asyncio.Transport) -> None:
        self.pending.pop(transport, None)
        self.sizes.pop(transport, None)

    def flush(self) -> None:
        pending, self.pending, self.sizes = self.pending, {}, {}
        for transport, chunks in pending.items():
            if transport.is_closing():
                continue
            try:
                transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except Exception:  # one broken connection must not keep the others' answers
                log.warning("A connection could not be written to; closed.", exc_info=True)
                transport.abort()


class BatchedTransport(asyncio.Transport):
    """A connection's transport whose writes wait in the loop's :class:`WriteBatch`."""

    def __init__(self, transport: asyncio.Transport, batch: WriteBatch) -> None:
        super().__init__()
        self.transport = transport
        self.batch = batch

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self.batch.add(self.transport, bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self.batch.flush_one(self.transport)  # what was written goes out before the close
        self.transport.close()

    def abort(self) -> None:
        self.batch.drop(self.transport)
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + self.batch.sizes.get(self.transport, 0)

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def write_eof(self) -> None:
        self.batch.flush_one(self.transport)
        self.transport.write_eof()


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBatch] = (
    weakref.WeakKeyDictionary()
)


def _batch_for(loop: asyncio.AbstractEventLoop) -> WriteBatch:
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = WriteBatch(loop)
    return batch


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads beyond ``max_head_bytes``, its
    writes batched per turn of the loop (:class:`WriteBatch`)."""

    max_head_bytes = 16 * 1024
    _in_head = False
    _head_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.transport = BatchedTransport(self.transport, _batch_for(self.loop))

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(self.transport, BatchedTransport):
            self.transport.batch.drop(self.transport.transport)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self.logger.warning("Request head too large; connection closed.")
                self.transport.write(TOO_LARGE)
                self.transport.close()
