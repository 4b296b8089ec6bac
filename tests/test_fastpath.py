"""The token endpoint's fast path (bridge/web/fastpath.py) answers as Quart does.

One table of requests runs against two apps built alike, one with ``server.token_fast_path``
on and one with it off; each answer is compared field by field: the status, the JSON body's
shape and error code, every header but ``Date`` (random values by shape), the request's log
line and the metrics it moved. A spy on Quart's ``before_request`` shows which requests the
fast path took.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge.web.fastpath import TokenFastPath
from support.app import bridge_of, login, site_cookie
from support.config import make_settings
from support.ops import captured_log

ORIGIN = "https://shop.example.com"


@dataclass
class State:
    """What one run of the table carries from row to row (the handle given out)."""

    handle: str = ""
    through_quart: list[str] = field(default_factory=list)


Row = Callable[[Client, Quart, State], Awaitable[Any]]


async def no_login(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens")


async def fresh_session(client: Client, app: Quart, state: State) -> Any:
    login(client, app)
    response = await client.get("/request_tokens", headers={"Sec-Fetch-Site": "same-origin"})
    state.handle = (await response.get_json())["tokens"]["refreshToken"]
    return response


async def same_session_again(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens")


async def refresh_with_handle(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens", query_string={"refreshToken": state.handle})


async def bad_handle(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens", query_string={"refreshToken": "x" * 43})


async def too_long_handle(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens", query_string={"refreshToken": "x" * 300})


async def too_long_query(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens", query_string={"q": "x" * 5000})


async def cross_site(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens", headers={"Sec-Fetch-Site": "cross-site"})


async def other_origin(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens", headers={"Origin": "https://evil.example"})


async def allowed_origin(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens", headers={"Origin": ORIGIN})


async def unknown_avatar(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens/nope")


async def odd_avatar_name(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens/a.b")


async def forbidden_avatar(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens/premium")


async def allowed_avatar(client: Client, app: Quart, state: State) -> Any:
    login(client, app, user="carol", groups=["customers"])
    return await client.get("/request_tokens/premium")


async def wrong_method(client: Client, app: Quart, state: State) -> Any:
    return await client.put("/request_tokens")


async def post_refresh(client: Client, app: Quart, state: State) -> Any:
    return await client.post("/request_tokens", json={"refreshToken": state.handle})


async def site_logged_out(client: Client, app: Quart, state: State) -> Any:
    client.set_cookie("localhost", "session", site_cookie(app, "alice")[:-4] + "AAAA")
    return await client.get("/request_tokens")


ROWS: list[Row] = [
    no_login,
    fresh_session,
    same_session_again,
    refresh_with_handle,
    bad_handle,
    too_long_handle,
    too_long_query,
    cross_site,
    other_origin,
    allowed_origin,
    unknown_avatar,
    odd_avatar_name,
    forbidden_avatar,
    wrong_method,
    post_refresh,
    allowed_avatar,
    site_logged_out,
]
# Not the component's token GETs: Quart answers them on both apps.
THROUGH_QUART = {"odd_avatar_name", "wrong_method", "post_refresh"}

RANDOM = re.compile(r"[A-Za-z0-9_\-.=~+/%:]{16,}")
EXPIRES = re.compile(r"Expires=[^;]+")  # werkzeug dates a cookie by the wall clock


def shape(value: Any) -> Any:
    """``value`` with its random parts (tokens, handles, ids) replaced by a placeholder."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    if isinstance(value, str):
        return RANDOM.sub("<random>", EXPIRES.sub("Expires=<date>", value))
    return value


def counters(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter's samples and every histogram's count (durations differ run to run)."""
    found = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_sum", "_created")):
                continue
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def answers(app: Quart) -> list[dict[str, Any]]:
    """Run the table against ``app``: each row's answer, log line and metric increments."""
    state = State()

    @app.before_request
    async def spy() -> None:
        from quart import request

        state.through_quart.append(request.path)

    client = app.test_client()
    registry = bridge_of(app).metrics.registry
    out = []
    for row in ROWS:
        before = counters(registry)
        with captured_log() as log:
            response = await row(client, app, state)
        after = counters(registry)
        lines = log.of("bridge.request")
        [line] = lines
        body = await response.get_data(as_text=True)
        out.append(
            {
                "row": row.__name__,
                "status": response.status_code,
                "body": shape(json.loads(body))
                if response.mimetype == "application/json"
                else body,
                "headers": sorted(
                    (name.lower(), shape(value))
                    for name, value in response.headers.items()
                    if name.lower() != "date"
                ),
                "log": {
                    key: shape(value)
                    for key, value in line.items()
                    if key not in ("duration_ms", "time", "ts")
                },
                "metrics": {
                    key: after[key] - before.get(key, 0.0)
                    for key in after
                    if after[key] != before.get(key, 0.0)
                },
                "quart": bool(state.through_quart),
            }
        )
        state.through_quart.clear()
    return out


@pytest.fixture
def settings_of() -> Callable[[bool], Any]:
    def build(fast: bool) -> Any:
        return make_settings({"server": {"token_fast_path": fast, "allowed_origins": [ORIGIN]}})

    return build


async def test_the_fast_path_answers_as_quart_does(
    make_app: Callable[..., Quart], settings_of: Callable[[bool], Any]
) -> None:
    runs = []
    for fast in (True, False):
        app = make_app(settings_of(fast))
        async with app.test_app():
            runs.append(await answers(app))
    fast_run, quart_run = runs
    for fast_answer, quart_answer in zip(fast_run, quart_run, strict=True):
        name = fast_answer["row"]
        assert quart_answer["quart"], name  # with the fast path off, Quart answers everything
        assert fast_answer["quart"] == (name in THROUGH_QUART), name
        for key in ("status", "body", "headers", "log", "metrics"):
            assert fast_answer[key] == quart_answer[key], (name, key)


async def test_the_table_covers_every_outcome(
    make_app: Callable[..., Quart], settings_of: Callable[[bool], Any]
) -> None:
    app = make_app(settings_of(True))
    async with app.test_app():
        run = await answers(app)
    statuses = {answer["row"]: answer["status"] for answer in run}
    assert statuses == {
        "no_login": 401,
        "fresh_session": 200,
        "same_session_again": 200,
        "refresh_with_handle": 200,
        "bad_handle": 401,
        "too_long_handle": 400,
        "too_long_query": 413,
        "cross_site": 403,
        "other_origin": 403,
        "allowed_origin": 200,
        "unknown_avatar": 404,
        "odd_avatar_name": 404,
        "forbidden_avatar": 403,
        "wrong_method": 405,
        "post_refresh": 200,  # the same refresh again, within its grace window
        "allowed_avatar": 200,
        "site_logged_out": 401,
    }
    cleared = next(a for a in run if a["row"] == "site_logged_out")
    assert any(name == "set-cookie" for name, _ in cleared["headers"])
    cors = dict(next(a for a in run if a["row"] == "allowed_origin")["headers"])
    assert cors["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" in cors


@pytest.mark.parametrize(
    ("scope", "taken"),
    [
        ({"method": "GET", "path": "/request_tokens"}, ""),
        ({"method": "GET", "path": "/request_tokens/premium"}, "premium"),
        ({"method": "GET", "path": "/avatar/request_tokens", "root_path": "/avatar"}, ""),
        ({"method": "POST", "path": "/request_tokens"}, None),
        ({"method": "HEAD", "path": "/request_tokens"}, None),
        ({"method": "GET", "path": "/request_tokens/"}, None),
        ({"method": "GET", "path": "/request_tokens/a.b"}, None),
        ({"method": "GET", "path": "/healthz"}, None),
        ({"method": "GET", "path": "/request_tokens", "http_version": "1.0"}, None),
        ({"method": "GET", "path": "/request_tokens", "host": b"bad host"}, None),
        ({"method": "GET", "path": "/request_tokens", "host": None}, None),
        ({"method": "GET", "path": "/request_tokens", "body": b"content-length"}, None),
        ({"method": "GET", "path": "/request_tokens", "body": b"transfer-encoding"}, None),
        ({"type": "websocket", "method": "GET", "path": "/request_tokens"}, None),
    ],
)
def test_only_the_components_token_gets_take_the_fast_path(
    scope: dict[str, Any], taken: str | None
) -> None:
    host = scope.pop("host", b"127.0.0.1:8000")
    body = scope.pop("body", None)
    headers = [(b"host", host)] if host is not None else []
    if body is not None:
        headers.append((body, b"0" if body == b"content-length" else b"chunked"))
    full = {"type": "http", "http_version": "1.1", "root_path": "", "headers": headers, **scope}
    assert TokenFastPath.token_get(full) == taken
