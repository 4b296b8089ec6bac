"""Read the rest of a request's body before its answer starts, so the client gets the answer.

An app may answer before it has read the whole body: 413 for a body over the limit (Quart
refuses a ``Content-Length`` over ``MAX_CONTENT_LENGTH`` without reading a byte), 403 for a
cross-site POST, 401 for a visitor who is not signed in. Some servers (granian) then close the
connection with the unread body still in the socket; the kernel answers that with a reset, and
the client may lose the answer it was sent: in a measured run 40 of 300 POSTs of 70 KB to
``/request_tokens`` under granian ended in "server disconnected" instead of 413.

This ASGI middleware sits in front of the app. Before an answer to a request that carries a
body starts, it reads and drops what is left of the body, up to ``DRAIN_LIMIT`` bytes and
``DRAIN_SECONDS``, so the client has finished sending when the answer arrives. A body beyond
either bound is left to the server, which closes the connection (as nginx does after its
lingering time). The answer's start waits, not just its end: granian ends the body (the next
message is ``http.disconnect``) once an answer has started. So an app behind this middleware
cannot stream an answer while it still reads the body; none of the bridge's routes does.
Dropped bytes are never kept: the memory cost is one chunk at a time. Requests without a body
(every GET of the component) pass straight through.

Every ``receive`` goes through one lock, the app's and the drain's alike, so the two never wait
on the server at the same time, and nothing calls ``receive`` again once the body is complete
(a completed body's next message is the disconnect, which would block until the client left).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable

DRAIN_LIMIT = 1024 * 1024
DRAIN_SECONDS = 5.0

# The component's token GETs skip even the header scan; a GET body has no meaning in HTTP.
_NO_BODY_METHODS = frozenset({"GET", "HEAD"})


def _declares_body(scope: Any) -> bool:
    """True if the request says it has a body (``Content-Length`` above 0 or chunked)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class DrainBodies:
    """ASGI middleware: the unread rest of a request body is read (bounded) before the answer
    starts. See the module docstring."""

    def __init__(self, app: Any, limit: int = DRAIN_LIMIT, seconds: float = DRAIN_SECONDS) -> None:
        self.app = app
        self.limit = limit
        self.seconds = seconds

    async def __call__(
        self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in _NO_BODY_METHODS
            or not _declares_body(scope)
        ):
            await self.app(scope, receive, send)
            return
        request = _Request(receive, send, self.limit, self.seconds)
        await self.app(scope, request.receive, request.send)


class _Request:
    """One request's body as seen through the middleware."""

    def __init__(
        self, receive: ASGIReceiveCallable, send: ASGISendCallable, limit: int, seconds: float
    ) -> None:
        self._receive = receive
        self._send = send
        self._limit = limit
        self._seconds = seconds
        self._lock = asyncio.Lock()
        self._done = False  # the body's last part arrived, or the client left

    def _note(self, message: ASGIReceiveEvent) -> None:
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._done = True

    async def receive(self) -> ASGIReceiveEvent:
        async with self._lock:
            message = await self._receive()
            self._note(message)
        return message

    async def send(self, message: Any) -> None:
        if not self._done and message["type"] == "http.response.start":
            try:
                await asyncio.wait_for(self._drain(), self._seconds)
            except TimeoutError:
                pass  # a slow sender: the server closes the connection after the answer
        await self._send(message)

    async def _drain(self) -> None:
        dropped = 0
        while not self._done and dropped <= self._limit:
            async with self._lock:
                if self._done:  # the app's own receive took the last part meanwhile
                    return
                message = await self._receive()
                self._note(message)
            if message["type"] == "http.request":
                dropped += len(message.get("body", b""))
