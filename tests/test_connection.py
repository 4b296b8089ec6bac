"""The bridge's ASGI connection (bridge/connection.py): a request runs in the server's task, a
client that leaves cancels a request still waiting, and a body in several messages is read."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Quart

from bridge import connection
from conftest import site_cookie

Receive = Callable[[], Awaitable[dict[str, Any]]]


def scope(method: str, path: str, cookie: str = "", query: bytes = b"") -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"sec-fetch-site", b"same-origin")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    if method == "POST":
        headers.append((b"content-type", b"application/json"))
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
        "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": headers,
    }  # fmt: skip


class Client:
    """One ASGI request: the messages it is given, what it sends, and how often it asks."""

    def __init__(self, body: list[bytes], *, leave_after: float | None = None) -> None:
        self.body = body
        self.leave_after = leave_after
        self.asked = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.asked += 1
        if self.body:
            chunk = self.body.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.body)}
        if self.leave_after is None:
            await asyncio.Future()  # stays until the app is done
        await asyncio.sleep(self.leave_after or 0)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))

    def cookie(self, name: str) -> str:
        start = self.sent[0]
        for key, value in start["headers"]:
            if key == b"set-cookie" and value.startswith(name.encode() + b"="):
                return value.decode().split(";")[0]
        raise AssertionError(f"no {name} cookie set")


async def run(app: Quart, request: dict[str, Any], client: Client) -> float:
    started = time.monotonic()
    await app(request, client.receive, client.send)  # type: ignore[arg-type]
    return time.monotonic() - started


async def test_a_quick_request_never_asks_whether_its_client_left(app: Quart) -> None:
    client = Client([b""])
    await run(app, scope("GET", "/healthz"), client)
    assert client.status == 200
    assert client.asked == 1  # the body only: no watcher was started, no task spawned


async def test_a_waiting_request_is_cancelled_when_its_client_leaves(
    make_app: Callable[..., Quart], fake_state: Any
) -> None:
    app = make_app()
    fake_state.latency = 5.0  # Sentifyd answers in 5 s; the client leaves after 0.4 s
    async with app.test_app():
        cookie = "session=" + site_cookie(app, "alice")
        client = Client([b""], leave_after=0.4)
        took = await run(app, scope("GET", "/request_tokens", cookie), client)
        assert client.status is None and client.sent == []  # nothing sent to a client gone
        assert client.asked == 2  # the body, then the watcher's wait for the disconnect
        assert took < 3.0, took
        # Nothing was left held: the same visitor is served at once when Sentifyd is quick.
        fake_state.latency = 0.0
        again = Client([b""])
        took = await run(app, scope("GET", "/request_tokens", cookie), again)
        assert again.status == 200, again.sent
        assert again.json["tokens"]["accessToken"]
        assert took < 3.0, took


async def test_a_client_that_stays_gets_a_slow_answer(
    make_app: Callable[..., Quart], fake_state: Any
) -> None:
    app = make_app()
    fake_state.latency = connection.WATCH_AFTER * 3  # the watcher starts, and sees no one go
    async with app.test_app():
        client = Client([b""])
        await run(app, scope("GET", "/request_tokens", "session=" + site_cookie(app)), client)
        assert client.status == 200, client.sent
        assert client.asked == 2


async def test_a_body_in_several_messages_is_read_whole(app: Quart) -> None:
    cookie = "session=" + site_cookie(app, "alice")
    first = Client([b""])
    await run(app, scope("GET", "/request_tokens", cookie), first)
    assert first.status == 200, first.sent
    handle = first.json["tokens"]["refreshToken"]
    cookies = f"{cookie}; {first.cookie('sentifyd_bridge')}"
    body = json.dumps({"refreshToken": handle}).encode()
    chunks = [body[:7], body[7:20], body[20:]]
    second = Client(chunks)
    await run(app, scope("POST", "/request_tokens", cookies), second)
    assert second.status == 200, second.sent
    assert second.json["tokens"]["refreshToken"] not in ("", handle)  # the handle rotated


async def test_a_client_gone_before_its_request_arrived_gets_nothing(app: Quart) -> None:
    client = Client([], leave_after=0)
    await run(app, scope("GET", "/healthz"), client)
    assert client.sent == [] and client.asked == 1


async def test_an_answer_in_memory_is_sent_in_one_body_message(app: Quart) -> None:
    client = Client([b""])
    await run(app, scope("GET", "/healthz"), client)
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
    assert client.sent[1]["more_body"] is False and client.json
    length = dict(client.sent[0]["headers"])[b"content-length"]
    assert int(length) == len(client.sent[1]["body"])


# --- the token endpoint's direct path answers as Quart's route does ------------------------


async def _exchanges(app: Quart, caplog: Any) -> list[tuple[Any, ...]]:
    """The same visitor's token requests, refusals included; what each answer and log line say."""
    client = app.test_client()
    seen: list[tuple[Any, ...]] = []

    async def ask(path: str, **headers: str) -> Any:
        caplog.clear()
        answer = await client.get(path, headers={"Sec-Fetch-Site": "same-origin", **headers})
        body = await answer.get_json()
        lines = [r.fields for r in caplog.records if r.name == "bridge.request"]  # type: ignore[attr-defined]
        assert len(lines) == 1, lines
        line = {k: v for k, v in lines[0].items() if k not in ("request_id", "duration_ms")}
        cookies = sorted(
            h.split("=", 1)[0] + (" cleared" if "Max-Age=0" in h or "01 Jan 1970" in h else "")
            for h in answer.headers.getlist("Set-Cookie")
        )
        names = sorted(n.lower() for n, _ in answer.headers.items() if n.lower() != "set-cookie")
        error = body.get("error") if isinstance(body, dict) else None
        seen.append((path.split("?")[0], answer.status_code, error, names, cookies, line))
        assert answer.headers["X-Request-ID"] == lines[0]["request_id"]
        return body

    async with app.test_app():
        await ask("/request_tokens")  # no login: 401
        client.set_cookie("localhost", "session", site_cookie(app, "alice"))
        first = await ask("/request_tokens")
        handle = first["tokens"]["refreshToken"]
        await ask(f"/request_tokens?refreshToken={handle}")
        await ask("/request_tokens?refreshToken=not-a-handle-we-gave")
        await ask("/request_tokens/premium")  # not in the customers group: 403
        await ask("/request_tokens/nobody")  # no such avatar: 404
        await ask("/request_tokens", **{"Sec-Fetch-Site": "cross-site"})
        client.delete_cookie("localhost", "session")  # signed out at the site
        await ask("/request_tokens")  # the session ends, its cookie is cleared
    for row in seen:
        row[-1].pop("session", None)  # a hash of each app's own random session id
    return seen


async def test_the_direct_path_answers_as_the_quart_route_does(
    make_app: Callable[..., Quart], caplog: Any
) -> None:
    import logging

    caplog.set_level(logging.INFO)
    direct = make_app()
    taken: list[str] = []
    route = direct.direct_route

    def counted(request: Any) -> Any:
        answer = route(request)
        if answer is not None:
            taken.append(request.path)
        return answer

    direct.direct_route = counted  # type: ignore[method-assign]
    through_quart = make_app()
    through_quart.serve_tokens = None  # type: ignore[attr-defined]
    direct_rows = await _exchanges(direct, caplog)
    quart_rows = await _exchanges(through_quart, caplog)
    assert len(taken) == len(direct_rows)  # every one of these took the direct path
    assert direct_rows == quart_rows
    statuses = [row[1] for row in direct_rows]
    assert statuses == [401, 200, 200, 401, 403, 404, 403, 401], direct_rows
    assert direct_rows[-1][4] == ["sentifyd_bridge cleared"]


async def test_other_token_requests_go_through_quart(app: Quart) -> None:
    taken = []
    route = app.direct_route

    def counted(request: Any) -> Any:
        answer = route(request)
        taken.append(answer is not None)
        if answer is not None:
            answer.close()
        return None

    app.direct_route = counted  # type: ignore[method-assign]
    client = app.test_client()
    await client.post("/request_tokens", json={})
    await client.get("/request_tokens/", headers={"Sec-Fetch-Site": "same-origin"})
    await client.get("/request_tokens/n%C3%A4me", headers={"Sec-Fetch-Site": "same-origin"})
    await client.get("/request_tokens", headers={"Host": "[::1]:8000"})
    await client.get("/healthz")
    assert taken == [False] * 5
