"""A stand-in for the Sentifyd login service, for the demo, the tests and users' own trials.

Sentifyd's servers cannot be reached from development machines, so this Quart app plays their
part as far as it is publicly known (see ``sentifyd-facts.md``): both login forms, every token
shape Sentifyd's own plugin accepts, JWT access tokens with a real ``exp``, and an optional,
single-use refresh call (Sentifyd documents none; the bridge may be configured to use one).

For fault tests it can be slowed down (``latency``) or made to fail (``fail``: ``"status:NNN"``,
``"non_json"``, ``"missing_fields"``, ``"huge"`` (~10 MB), ``"hang"`` or ``"reset"``), for every
login/refresh request or for the next ``fail_count`` ones. Its state lives in
``app.extensions["fake_sentifyd"]`` for in-process tests. With ``control=True`` (the default: it
is a test double, never a production service, so these endpoints have no authentication)
``GET /_fake/stats`` returns the counters (never a token) and ``POST /_fake/control`` takes any
of ``{"latency", "fail", "fail_count", "token_ttl", "shape", "reset": true}``; setting ``fail``
without ``fail_count`` makes it last until cleared with ``"fail": null``.

API keys are kept only as SHA-256 digests and counted by a short fingerprint; no answer and no
log line carries one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, TypeGuard

from hypercorn.asyncio import serve
from hypercorn.config import Config
from joserfc import jwt
from joserfc.jwk import OctKey
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

SHAPES = ("wrapped_snake", "flat_snake", "wrapped_camel", "flat_camel", "no_expiry")
FAIL_MODES = ("non_json", "missing_fields", "huge", "hang", "reset")  # and "status:NNN"
CONTROL_FIELDS = {"latency", "fail", "fail_count", "token_ttl", "shape", "reset"}


class Theme(TypedDict):
    primaryColor: str  # the wire's camel case, as in CamelTokens


class AvatarParams(TypedDict):
    """The avatar parameters the fake hands out with every token pair."""

    name: str
    voice: str
    theme: Theme
    language: str


class SnakeTokens(TypedDict):
    """A token pair in snake case ("wrapped_snake", "flat_snake", "no_expiry")."""

    access_token: str
    refresh_token: str
    avatar_params: AvatarParams
    token_type: str
    expires_in: NotRequired[int]  # left out in "no_expiry": the JWT's exp is then the only one


class CamelTokens(TypedDict):
    """A token pair in camel case: "wrapped_camel" names the parameters avatarParameters."""

    accessToken: str
    refreshToken: str
    tokenType: str
    expiresIn: int
    avatarParameters: NotRequired[AvatarParams]
    avatarParams: NotRequired[AvatarParams]


class Wrapped(TypedDict):
    data: SnakeTokens | CamelTokens


Issued = SnakeTokens | CamelTokens | Wrapped


class Stats(TypedDict):
    """``GET /_fake/stats`` (and ``/_fake/control``'s answer): counters, never a token."""

    login_calls: int
    refresh_calls: int
    calls_by_key: dict[str, int]
    access_tokens_issued: int
    refresh_tokens_issued: int
    token_ttl: int
    latency: float
    shape: str
    fail: str | None
    fail_count: int | None
    refresh_enabled: bool


class Control(TypedDict, total=False):
    """``POST /_fake/control``'s body, once :func:`_valid_control` has checked it."""

    latency: float
    fail: str | None
    fail_count: int | None
    token_ttl: int
    shape: str
    reset: bool


AVATAR_PARAMS: AvatarParams = {
    "name": "Ava",
    "voice": "en-US-1",
    "theme": {"primaryColor": "#4f46e5"},
    "language": "en",
}
ISSUER = "fake-sentifyd"
DEFAULT_AVATAR = "fake-avatar"  # the token subject when neither the key nor the request names one
HANG_SECONDS = 3600.0  # far beyond any client timeout; the sleep is cancelled on disconnect
HUGE_BYTES = 10 * 1024 * 1024
MAX_REMEMBERED = 10_000  # tokens kept per list: a long-running demo or load test must not grow

server_log = logging.getLogger("bridge.doubles.fake_sentifyd.server")


def key_fingerprint(api_key: str) -> str:
    """A short one-way name for an API key: safe to print, enough to tell keys apart."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def valid_fail_mode(mode: object) -> bool:
    if mode is None or mode in FAIL_MODES:
        return True
    if isinstance(mode, str) and mode.startswith("status:"):
        code = mode.removeprefix("status:")
        return code.isascii() and code.isdigit() and 200 <= int(code) <= 599
    return False


class ConnectionAborted(Exception):
    """Raised inside a started response ("reset" mode) so that the server drops the connection."""


@dataclass(eq=False)
class FakeState:
    """Everything the fake knows; tests read and set these attributes directly."""

    token_ttl: int = 60
    latency: float = 0.0
    shape: str = "wrapped_snake"
    refresh_enabled: bool = True
    fail: str | None = None
    fail_count: int | None = None  # None: fail until ``fail`` is cleared
    login_calls: int = 0
    refresh_calls: int = 0
    # key_fingerprint(key) -> logins presenting that key, accepted or not
    calls_by_key: dict[str, int] = field(default_factory=dict)
    issued_access_tokens: list[str] = field(default_factory=list, repr=False)
    issued_refresh_tokens: list[str] = field(default_factory=list, repr=False)
    live_refresh_tokens: dict[str, str] = field(default_factory=dict, repr=False)  # -> avatar id
    accepted: dict[str, str | None] = field(default_factory=dict, repr=False)  # digest -> avatar
    signing_key: OctKey = field(default_factory=lambda: OctKey.generate_key(256), repr=False)
    initial: tuple[int, float, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.initial = (self.token_ttl, self.latency, self.shape)

    def reset(self) -> None:
        """Forget calls, tokens and failures; restore the ttl, latency and shape given at start."""
        self.token_ttl, self.latency, self.shape = self.initial
        self.fail = self.fail_count = None
        self.login_calls = self.refresh_calls = 0
        self.calls_by_key.clear()
        self.issued_access_tokens.clear()
        self.issued_refresh_tokens.clear()
        self.live_refresh_tokens.clear()

    def take_failure(self) -> str | None:
        """The failure this request gets, counting ``fail_count`` down (and clearing it at 0)."""
        mode = self.fail
        if mode is not None and self.fail_count is not None:
            if self.fail_count <= 0:
                mode = None
            else:
                self.fail_count -= 1
            if self.fail_count <= 0:
                self.fail = self.fail_count = None
        return mode

    def stats(self) -> Stats:
        return {
            "login_calls": self.login_calls,
            "refresh_calls": self.refresh_calls,
            "calls_by_key": dict(self.calls_by_key),
            "access_tokens_issued": len(self.issued_access_tokens),
            "refresh_tokens_issued": len(self.issued_refresh_tokens),
            "token_ttl": self.token_ttl,
            "latency": self.latency,
            "shape": self.shape,
            "fail": self.fail,
            "fail_count": self.fail_count,
            "refresh_enabled": self.refresh_enabled,
        }

    def issue(self, avatar_id: str) -> Issued:
        """Mint a token pair for ``avatar_id`` and lay it out in the current shape."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": avatar_id,
            "iat": now,
            "exp": now + self.token_ttl,
            "jti": secrets.token_urlsafe(16),
        }
        access = jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self.signing_key)
        refresh = secrets.token_urlsafe(32)
        self.issued_access_tokens.append(access)
        self.issued_refresh_tokens.append(refresh)
        self.live_refresh_tokens[refresh] = avatar_id
        for remembered in (self.issued_access_tokens, self.issued_refresh_tokens):
            del remembered[:-MAX_REMEMBERED]
        while len(self.live_refresh_tokens) > MAX_REMEMBERED:  # the oldest lapses, as if expired
            del self.live_refresh_tokens[next(iter(self.live_refresh_tokens))]
        params: AvatarParams = json.loads(json.dumps(AVATAR_PARAMS))  # a copy each time
        data: SnakeTokens | CamelTokens
        if self.shape.endswith("camel"):
            camel: CamelTokens = {
                "accessToken": access,
                "refreshToken": refresh,
                "tokenType": "Bearer",
                "expiresIn": self.token_ttl,
            }
            if self.shape == "wrapped_camel":
                camel["avatarParameters"] = params
            else:
                camel["avatarParams"] = params
            data = camel
        else:
            data = {
                "access_token": access,
                "refresh_token": refresh,
                "avatar_params": params,
                "token_type": "Bearer",
                "expires_in": self.token_ttl,
            }
            if self.shape == "no_expiry":
                del data["expires_in"]  # the JWT's exp is then the only expiry source
        return data if self.shape.startswith("flat") else {"data": data}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(payload),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(code: str, status: int) -> Response:
    return _json({"error": code}, status)


async def _aborted_body() -> AsyncIterator[bytes]:
    yield b'{"data": {"access_tok'
    raise ConnectionAborted()


def _failure(mode: str, state: FakeState) -> Response:
    if mode.startswith("status:"):
        status = int(mode.removeprefix("status:"))
        return _json({"error": "fake_failure", "status": status}, status)
    if mode == "non_json":
        return Response(
            "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>",
            status=200,
            content_type="text/html; charset=utf-8",
        )
    if mode == "missing_fields":
        return _json({"data": {"token_type": "Bearer", "expires_in": state.token_ttl}})
    if mode == "reset":
        # Hypercorn (like any ASGI server) closes the connection when the app raises after the
        # response has started. Quart sends the status line and headers (200, chunked) before
        # the body, so the client sees them, then a truncated chunked body and a closed socket:
        # httpx raises RemoteProtocolError ("peer closed connection without sending complete
        # message body"). An exception raised *before* the response starts would instead get a
        # tidy 500 from hypercorn, which is not a reset at all.
        return Response(_aborted_body(), status=200, content_type="application/json")
    return _error("unknown_fail_mode", 500)


def _accepted_keys(api_keys: Mapping[str, str] | Iterable[str]) -> dict[str, str | None]:
    if isinstance(api_keys, str | bytes):
        raise TypeError("api_keys: give a list of keys or a key -> avatar id mapping, not a str")
    pairs = api_keys.items() if isinstance(api_keys, Mapping) else ((k, None) for k in api_keys)
    accepted: dict[str, str | None] = {}
    for key, avatar_id in pairs:
        if not isinstance(key, str) or not key or not (avatar_id is None or avatar_id):
            raise ValueError("api_keys: every key and avatar id must be a non-empty string")
        accepted[_digest(key)] = avatar_id
    if not accepted:
        raise ValueError("api_keys: give at least one API key")
    return accepted


def create_fake_sentifyd(
    api_keys: Mapping[str, str] | Iterable[str],
    *,
    token_ttl: int = 60,
    refresh_enabled: bool = True,
    shape: str = "wrapped_snake",
    latency: float = 0.0,
    control: bool = True,
) -> Quart:
    """Build the stand-in app. ``control`` enables the unauthenticated ``/_fake/*`` endpoints."""
    if shape not in SHAPES:
        raise ValueError(f"shape: one of {', '.join(SHAPES)}")
    if token_ttl < 1 or latency < 0:
        raise ValueError("token_ttl must be at least 1 and latency not negative")
    state = FakeState(
        token_ttl=token_ttl,
        latency=latency,
        shape=shape,
        refresh_enabled=refresh_enabled,
        accepted=_accepted_keys(api_keys),
    )
    app = Quart("fake_sentifyd")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.extensions["fake_sentifyd"] = state

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return _error((exc.name or "error").lower().replace(" ", "_"), exc.code or 500)

    # A peer's JSON object: each handler reads the fields it wants and checks their types.
    async def json_body() -> dict[str, object] | None:
        body = await request.get_json(force=True, silent=True)
        return body if isinstance(body, dict) else None

    async def answer(
        body: dict[str, object] | None, handle: Callable[[dict[str, object]], Response]
    ) -> Response:
        if state.latency > 0:
            await asyncio.sleep(state.latency)
        mode = state.take_failure()
        if mode == "hang":
            await asyncio.sleep(HANG_SECONDS)
            return _error("fake_hang_over", 504)
        if mode is not None and mode != "huge":
            return _failure(mode, state)
        response = _error("bad_request", 400) if body is None else handle(body)
        if mode == "huge":  # the normal answer, padded: only its size is wrong
            payload = json.loads(await response.get_data())
            payload["padding"] = "x" * HUGE_BYTES
            response = _json(payload, response.status_code)
        return response

    def login(body: dict[str, object], with_avatar_id: bool) -> Response:
        key = body.get("avatar_api_key")
        avatar_id = body.get("avatar_id") if with_avatar_id else None  # /api/login sends none
        if not isinstance(key, str | None) or not (avatar_id is None or isinstance(avatar_id, str)):
            return _error("bad_request", 400)
        digest = _digest(key) if key else ""
        if digest not in state.accepted:
            return _error("invalid_api_key", 401)
        owner = state.accepted[digest]
        if avatar_id and owner is not None and avatar_id != owner:
            return _error("avatar_mismatch", 403)
        return _json(state.issue(avatar_id or owner or DEFAULT_AVATAR))

    async def login_route(with_avatar_id: bool) -> Response:
        state.login_calls += 1
        body = await json_body()
        key = body.get("avatar_api_key") if body else None
        if isinstance(key, str) and key:
            fingerprint = key_fingerprint(key)
            state.calls_by_key[fingerprint] = state.calls_by_key.get(fingerprint, 0) + 1
        return await answer(body, lambda b: login(b, with_avatar_id))

    @app.post("/api/login")  # the documentation's form
    async def login_documented() -> Response:
        return await login_route(False)

    @app.post("/api/v1/chatbot/login")  # the form Sentifyd's own plugin uses
    async def login_plugin() -> Response:
        return await login_route(True)

    def refresh(body: dict[str, object]) -> Response:
        token = body.get("refresh_token")  # an avatar_id sent alongside is ignored
        if not isinstance(token, str) or not token:
            return _error("bad_request", 400)
        avatar_id = state.live_refresh_tokens.pop(token, None)  # single use
        if avatar_id is None:
            return _error("invalid_refresh_token", 401)
        return _json(state.issue(avatar_id))

    if refresh_enabled:

        @app.post("/api/v1/chatbot/refresh")
        async def refresh_route() -> Response:
            state.refresh_calls += 1
            return await answer(await json_body(), refresh)

    if control:

        @app.get("/_fake/stats")
        async def stats() -> Response:
            return _json(state.stats())

        @app.post("/_fake/control")
        async def control_route() -> Response:
            body = await json_body()
            if body is None or not _valid_control(body):
                return _error("bad_request", 400)
            if body.get("reset"):
                state.reset()
            state.latency = float(body.get("latency", state.latency))
            state.token_ttl = body.get("token_ttl", state.token_ttl)
            state.shape = body.get("shape", state.shape)
            if "fail" in body:  # a new failure lasts until cleared unless it is given a count
                state.fail, state.fail_count = body["fail"], body.get("fail_count")
            elif "fail_count" in body:
                state.fail_count = body["fail_count"]
            return _json(state.stats())

    return app


def _valid_control(body: dict[str, object]) -> TypeGuard[Control]:
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    checks: dict[str, Callable[[Any], bool]] = {
        "latency": lambda v: number(v) and 0 <= v <= HANG_SECONDS,
        "fail": valid_fail_mode,
        "fail_count": lambda v: v is None or count(v),
        "token_ttl": count,
        "shape": lambda v: v in SHAPES,
        "reset": lambda v: isinstance(v, bool),
    }
    return set(body) <= CONTROL_FIELDS and all(checks[k](v) for k, v in body.items())


def _drop_deliberate_resets(record: logging.LogRecord) -> bool:
    # Hypercorn logs "Error in ASGI Framework" with a traceback for every "reset": expected here.
    return not (record.exc_info and isinstance(record.exc_info[1], ConnectionAborted))


server_log.addFilter(_drop_deliberate_resets)


async def serve_fake_sentifyd(
    host: str,
    port: int,
    api_keys: Mapping[str, str] | Iterable[str],
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    **kwargs: Any,
) -> None:
    """Serve the stand-in under hypercorn until ``shutdown_trigger`` (default: SIGINT/SIGTERM)."""
    app = create_fake_sentifyd(api_keys, **kwargs)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    # Hypercorn's own handlers would print a second, unformatted copy of every line; ours
    # propagate to the application's logging. Start-up lines name the address only.
    config.errorlog = server_log
    config.accesslog = None
    config.graceful_timeout = 1.0  # nothing worth waiting for, not even a hanging request
    await serve(app, config, shutdown_trigger=shutdown_trigger)
