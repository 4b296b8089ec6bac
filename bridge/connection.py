"""How the bridge runs one HTTP request: Quart's ASGI connection, without its three tasks.

Quart runs every request as two tasks (the handler, and a receiver that feeds the body and
cancels the handler when the client leaves) and sends the answer under ``asyncio.wait_for``,
a third task. Most requests here are GETs whose whole (empty) body is in their first message,
and most answer in a millisecond. For such a request this connection

- runs the handler in the server's own task and sends the answer under ``asyncio.timeout``
  (a timer, no task), with Quart's ``RESPONSE_TIMEOUT``;
- answers the component's token requests by the app's ``direct_route`` (the token endpoint
  without Quart's contexts, hooks and dispatch; see :mod:`bridge.app`), others through Quart;
- sends an answer held in memory (every JSON answer, every page) as one body message;
- watches for the client leaving only once the request has run for :data:`WATCH_AFTER`
  seconds: a request still waiting then (on Sentifyd, on a lock) is cancelled when its client
  disconnects, as under Quart; one that answers sooner costs no watcher.

A body that arrives in several messages is fed by a receiver task, as Quart does.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.asgi import ASGIHTTPConnection, _handle_exception
from quart.utils import cancel_tasks, encode_headers, raise_task_exceptions
from quart.wrappers import Request, Response
from quart.wrappers.response import DataBody

WATCH_AFTER = 0.25  # seconds a request runs before its client's leaving is watched for


class HTTPConnection(ASGIHTTPConnection):
    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        message = await receive()
        if message["type"] != "http.request":
            return  # the client left before its request arrived
        request.body.append(message.get("body", b""))
        if message.get("more_body", False):
            await self._streamed(request, receive, send)
            return
        request.body.set_complete()
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - an ASGI app runs in a task
        watch = _Watch(task, receive)
        timer = asyncio.get_running_loop().call_later(WATCH_AFTER, watch.start)
        try:
            await self.handle_request(request, send)
        except asyncio.CancelledError:
            if watch.left and task.uncancel() == 0:
                return  # cancelled because the client left, as Quart's receiver would
            raise
        finally:
            timer.cancel()
            watch.stop()

    async def _streamed(
        self, request: Request, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Quart's own way: a receiver feeds the body while the handler runs."""
        receiver = asyncio.ensure_future(self.handle_messages(request, receive))
        handler = asyncio.ensure_future(self.handle_request(request, send))
        done, pending = await asyncio.wait([handler, receiver], return_when=asyncio.FIRST_COMPLETED)
        await cancel_tasks(pending)
        raise_task_exceptions(done)

    async def handle_request(self, request: Request, send: ASGISendCallable) -> None:
        route = getattr(self.app, "direct_route", None)
        direct = route(request) if route is not None else None
        try:
            if direct is not None:
                response: Any = await direct  # the token endpoint, past Quart's machinery
            else:
                response = await self.app.handle_request(request)
        except Exception as error:
            response = await _handle_exception(self.app, error)
        if isinstance(response, Response) and response.timeout != Ellipsis:
            timeout = cast(float | None, response.timeout)
        else:
            timeout = self.app.config["RESPONSE_TIMEOUT"]
        try:
            async with asyncio.timeout(timeout):
                if isinstance(response, Response) and isinstance(response.response, DataBody):
                    await self._send_whole(send, response, response.response)
                else:
                    await self._send_response(send, response)
        except TimeoutError:
            pass  # as Quart: a client too slow to take the answer does not get all of it

    @staticmethod
    async def _send_whole(send: ASGISendCallable, response: Response, body: DataBody) -> None:
        """The status, the headers and the body (or its range) in two messages, not three."""
        headers = encode_headers(response.headers)
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        data = body.data[body.begin : body.end]
        await send({"type": "http.response.body", "body": data, "more_body": False})


class _Watch:
    """Once started, wait for the client's ``http.disconnect`` and cancel the request's task."""

    def __init__(self, task: asyncio.Task[Any], receive: ASGIReceiveCallable) -> None:
        self.task = task
        self.receive = receive
        self.watcher: asyncio.Task[None] | None = None
        self.left = False
        self.done = False

    def start(self) -> None:
        if not self.done:
            self.watcher = asyncio.ensure_future(self._watch())

    def stop(self) -> None:
        self.done = True
        if self.watcher is not None:
            self.watcher.cancel()

    async def _watch(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                if not self.done:
                    self.left = True
                    self.task.cancel()
                return
