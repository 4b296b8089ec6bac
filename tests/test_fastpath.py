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
from quart import Quart, Request
from quart.typing import TestClientProtocol as Client
from werkzeug.datastructures import Headers, ImmutableMultiDict

from bridge.web.fastpath import TokenFastPath, TokenGet
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


async def escaped_handle(client: Client, app: Quart, state: State) -> Any:
    # A query with a percent escape is Quart's to decode (the fast path takes plain ones).
    return await client.get("/request_tokens?refreshToken=%78" + "x" * 42)


async def plus_in_handle(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens?refreshToken=a+b&refreshToken=c")


async def blank_handle(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens?refreshToken=&q")


async def second_cookie_header(client: Client, app: Quart, state: State) -> Any:
    # Two Cookie headers (the jar's and this one): werkzeug joins them, and so must the fast path.
    return await client.get("/request_tokens", headers={"Cookie": 'theme="dark"; lang=en'})


async def non_ascii_cookie(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens", headers={"Cookie": "name=caf\u00e9"})


async def spoofed_remote_addr(client: Client, app: Quart, state: State) -> Any:
    return await client.get("/request_tokens", headers={"Remote-Addr": "203.0.113.9"})


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
    escaped_handle,
    plus_in_handle,
    blank_handle,
    second_cookie_header,
    non_ascii_cookie,
    spoofed_remote_addr,
    site_logged_out,
]
# Not the component's token GETs: Quart answers them on both apps.
THROUGH_QUART = {
    "odd_avatar_name",
    "wrong_method",
    "post_refresh",
    "escaped_handle",
    "non_ascii_cookie",
}

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
        "escaped_handle": 401,
        "plus_in_handle": 401,
        "blank_handle": 200,
        "second_cookie_header": 200,
        "non_ascii_cookie": 200,
        "spoofed_remote_addr": 200,
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


def quart_request(scope: dict[str, Any]) -> Request:
    """Quart's request for ``scope``, built as Quart builds it (its public constructor)."""
    headers = Headers()
    headers["Remote-Addr"] = (scope.get("client") or ["<local>"])[0]
    for name, value in scope["headers"]:
        headers.add(name.decode("latin-1").title(), value.decode("latin-1"))
    root = scope.get("root_path", "")

    async def no_push(path: str, pushed: Headers) -> None:
        raise AssertionError("no push")

    return Request(
        scope["method"],
        scope["scheme"],
        scope["path"][len(root) :],
        scope["query_string"],
        headers,
        root,
        scope["http_version"],
        scope,  # type: ignore[arg-type]
        send_push_promise=no_push,
    )


LOOKED_UP = [
    "Cookie", "cookie", "COOKIE", "Host", "Origin", "Sec-Fetch-Site", "sec-fetch-site",
    "Authorization", "X-Request-ID", "x-request-id", "User-Agent", "Remote-Addr", "remote-addr",
    "X-Absent", "Content-Length", "Transfer-Encoding", "Accept",
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "query", "client"),
    [
        ([(b"cookie", b"session=abc; sentifyd_bridge=def")], b"", ("10.0.0.1", 5000)),
        ([(b"cookie", b'a="q\\"uoted"; b=2; a=3'), (b"cookie", b"c=4;;d")], b"x=1&x=2&y", None),
        ([(b"Cookie", b"  spaced = v ; =empty; novalue")], b"refreshToken=a+b&&=c", None),
        ([(b"cookie", b"x=\\303\\251; y=%41")], b"refreshToken=&refreshToken=z", None),
        ([(b"remote-addr", b"203.0.113.9"), (b"origin", b"https://a.example")], b"a=", None),
        (
            [(b"x-request-id", b"one"), (b"X-Request-Id", b"two"), (b"sec-fetch-site", b"none")],
            b"~._-=1",
            ("2001:db8::1", 1),
        ),
        ([(b"authorization", b"Bearer \xe9t\xe9"), (b"user-agent", b"Mozilla/5.0")], b"", None),
    ],
)
def test_the_token_get_reads_what_quarts_request_reads(
    headers: list[tuple[bytes, bytes]], query: bytes, client: tuple[str, int] | None
) -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/avatar/request_tokens",
        "root_path": "/avatar",
        "query_string": query,
        "headers": [(b"host", b"shop.example.com"), *headers],
        "client": client,
    }
    assert TokenFastPath.token_get(scope) == ""  # the fast path's to read
    ours, quarts = TokenGet(scope), quart_request(scope)
    for name in ("method", "path", "query_string", "remote_addr", "url_rule", "view_args"):
        assert getattr(ours, name) == getattr(quarts, name), name
    assert ours.scope is quarts.scope
    assert isinstance(ours.cookies, ImmutableMultiDict)
    assert list(ours.cookies.items(multi=True)) == list(quarts.cookies.items(multi=True))
    assert isinstance(ours.args, ImmutableMultiDict)
    assert list(ours.args.items(multi=True)) == list(quarts.args.items(multi=True))
    for name in LOOKED_UP:
        assert ours.headers.get(name) == quarts.headers.get(name), name
        assert ours.headers.get(name, "-") == quarts.headers.get(name, "-"), name
        assert ours.headers.getlist(name) == quarts.headers.getlist(name), name


@pytest.mark.parametrize(
    "header",
    [
        (b"cookie", b"name=caf\xc3\xa9"),  # werkzeug's two cookie parsers differ on these bytes
        (b"x-stra\xdfe", b"1"),  # werkzeug title-cases names: "\xdf" (sharp s) becomes "Ss"
    ],
)
def test_other_bytes_go_to_quart(header: tuple[bytes, bytes]) -> None:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/request_tokens",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), header],
    }
    assert TokenFastPath.token_get(scope) is None


@pytest.mark.parametrize("query", [b"refreshToken=%41", b"a=\xff", b"a=1;b=2", b"a=%zz"])
def test_a_query_with_escapes_or_other_bytes_goes_to_quart(query: bytes) -> None:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/request_tokens",
        "query_string": query,
        "headers": [(b"host", b"localhost")],
    }
    assert TokenFastPath.token_get(scope) is None
