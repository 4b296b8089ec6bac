"""bridge/web/bodies.py: the rest of a request body is read, within bounds, before an early
answer starts (the serve-level check is in tests/test_server_limits.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.web.bodies import DrainBodies


class Server:
    """An ASGI server's side of one request: the body in parts, then the disconnect (which,
    like a real server's, only comes when the client leaves, here never), and what was sent."""

    def __init__(
        self, parts: list[bytes], *, stall_after: int | None = None, slow_last: bool = False
    ) -> None:
        self.parts = parts
        self.slow_last = slow_last  # the last part takes a while to arrive
        self.given = 0
        self.stall_after = stall_after  # parts given before the client stops sending
        self.sent: list[dict[str, Any]] = []
        self.body_read_when_answered: int | None = None
        self.waiting = 0  # receive calls waiting at once

    async def receive(self) -> dict[str, Any]:
        self.waiting += 1
        assert self.waiting == 1, "two receive calls wait on the server at once"
        try:
            if self.given == len(self.parts) or self.given == self.stall_after:
                await asyncio.Event().wait()  # the body is over: only a disconnect would come
            part = self.parts[self.given]
            self.given += 1
            await asyncio.sleep(0.05 if self.slow_last and self.given == len(self.parts) else 0)
            return {
                "type": "http.request",
                "body": part,
                "more_body": self.given < len(self.parts),
            }
        finally:
            self.waiting -= 1

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.body_read_when_answered = self.given
        self.sent.append(message)


def scope(method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    if headers is None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"400")]
    return {"type": "http", "method": method, "path": "/request_tokens", "headers": headers}


async def answer_413(scope: Any, receive: Any, send: Any) -> None:
    """An app that answers at once, reading nothing (Quart over MAX_CONTENT_LENGTH)."""
    await send({"type": "http.response.start", "status": 413, "headers": []})
    await send({"type": "http.response.body", "body": b"{}", "more_body": False})


async def run(app: Any, server: Server, request: dict[str, Any], **bounds: Any) -> None:
    await asyncio.wait_for(DrainBodies(app, **bounds)(request, server.receive, server.send), 5)


async def test_an_early_answer_starts_only_after_the_whole_body_is_read() -> None:
    server = Server([b"x" * 100] * 4)
    await run(answer_413, server, scope())
    assert server.body_read_when_answered == 4
    assert [m["type"] for m in server.sent] == ["http.response.start", "http.response.body"]
    assert server.sent[0]["status"] == 413


async def test_the_drain_stops_at_its_byte_limit_and_the_answer_still_goes_out() -> None:
    server = Server([b"x" * 100] * 50)
    await run(answer_413, server, scope(), limit=250)
    # 3 parts take it past 250 bytes; the other 47 are left to the server.
    assert server.body_read_when_answered == 3
    assert server.sent[0]["status"] == 413


async def test_the_drain_stops_at_its_deadline_for_a_client_that_stops_sending() -> None:
    server = Server([b"x" * 100] * 4, stall_after=2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await run(answer_413, server, scope(), seconds=0.3)
    assert 0.3 <= loop.time() - started < 2
    assert server.body_read_when_answered == 2
    assert server.sent[0]["status"] == 413


async def quart_like(scope: Any, receive: Any, send: Any) -> None:
    """Quart's shape: a task receiving the body beside the handler, cancelled once it answers;
    this handler reads one part and answers."""
    got: list[bytes] = []
    first = asyncio.Event()

    async def receiver() -> None:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            got.append(message["body"])
            first.set()

    task = asyncio.ensure_future(receiver())
    await first.wait()
    await answer_413(scope, receive, send)
    task.cancel()


async def test_an_app_receiving_beside_the_drain_never_makes_two_receives_wait_at_once() -> None:
    server = Server([b"x" * 10] * 30)
    # A drain's deadline beyond the test's: a drain that waited on a finished body would hang.
    await run(quart_like, server, scope(), seconds=60)
    assert server.body_read_when_answered == 30
    assert server.sent[0]["status"] == 413


async def test_the_drain_does_not_receive_again_when_the_app_took_the_last_part() -> None:
    # The app's receiver is already waiting for the last part when the answer starts; the
    # drain waits its turn, and then finds the body complete: another receive would hang.
    server = Server([b"x" * 10] * 2, slow_last=True)
    await run(quart_like, server, scope(), seconds=60)
    assert server.body_read_when_answered == 2
    assert server.sent[0]["status"] == 413


async def test_an_app_that_reads_the_body_is_not_held_and_no_receive_follows_the_end() -> None:
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    server = Server([b"a", b"b", b"c"])
    await run(echo, server, scope())  # a receive after the end would wait forever: timeout
    assert server.sent[1]["body"] == b"abc"


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", [(b"content-length", b"400")]),
        ("POST", [(b"content-length", b"0")]),
        ("POST", []),
    ],
    ids=["a-get", "an-empty-post", "a-post-without-length"],
)
async def test_a_request_without_a_body_passes_straight_through(
    method: str, headers: list[tuple[bytes, bytes]]
) -> None:
    server = Server([b"x" * 100] * 4)
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.extend([receive, send])
        await answer_413(scope, receive, send)

    await run(app, server, scope(method, headers))
    assert seen == [server.receive, server.send]
    assert server.body_read_when_answered == 0


async def test_a_chunked_body_is_drained() -> None:
    server = Server([b"x" * 100] * 3)
    await run(answer_413, server, scope(headers=[(b"transfer-encoding", b"chunked")]))
    assert server.body_read_when_answered == 3


async def test_lifespan_passes_straight_through() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await DrainBodies(app)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]
