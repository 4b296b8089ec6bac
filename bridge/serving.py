"""What the bridge adds to uvicorn: a cap on a request head, and answers written together.

hypercorn (``h11_max_incomplete_size``) and uvicorn's h11 parser refuse a request whose head
keeps growing; uvicorn's faster httptools parser has no such cap and buffers a header of any
size. :class:`BoundedHttpToolsProtocol` counts the bytes of a head still incomplete after each
read and answers 431 and closes once they pass the cap, so at most one read beyond it is held.

Its connections write through :mod:`bridge.turns`: what the requests answered in one turn of
the event loop goes out at the end of the turn, each connection's bytes in one write.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bridge.turns import BatchedTransport, batch_for

TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: 30\r\n\r\n"
    b'{"error":"request_too_large"}\n'
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads beyond ``max_head_bytes``, its
    writes batched per turn of the loop (:mod:`bridge.turns`)."""

    max_head_bytes = 16 * 1024
    _in_head = False
    _head_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.transport = BatchedTransport(self.transport, batch_for(self.loop))

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
