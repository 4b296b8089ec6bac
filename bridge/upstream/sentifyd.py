"""The Sentifyd upstream client: login (both documented forms), optional refresh, every
documented response shape, expiry, timeouts and bounded retries.

Errors become :class:`bridge.errors.UpstreamError` subclasses whose messages are fixed: the
API key, the request body and Sentifyd's answer never travel into an exception or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bridge.errors import UpstreamError, UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from bridge.observe import tracing
from bridge.settings.schema import AvatarSettings, SentifydSettings
from bridge.upstream.outbound import AnswerTooLarge, bounded

log = logging.getLogger("bridge.sentifyd")

MAX_LIFETIME = 24 * 3600


@dataclass(frozen=True)
class UpstreamTokens:
    access_token: str
    refresh_token: str | None
    token_type: str
    expires_at: float
    issued_at: float
    avatar_params: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show the tokens, even in a debugger or traceback
        return f"UpstreamTokens(token_type={self.token_type!r}, expires_at={self.expires_at})"


def _pick(data: dict[str, object], *names: str) -> object:
    for name in names:
        if name in data and data[name] is not None:
            return data[name]
    return None


def jwt_exp(token: str) -> float | None:
    """Read a JWT's ``exp`` without verifying it (we do not hold Sentifyd's key)."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError, RecursionError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def parse_tokens(body: Any, *, now: float, default_expires_in: int) -> UpstreamTokens:
    """Read tokens from any documented shape: wrapped in ``data`` or flat, snake or camel case."""
    if not isinstance(body, dict):
        raise UpstreamUnavailable()
    # Sentifyd's JSON object: every field is read through _pick and checked before it is used.
    data: dict[str, object] = body["data"] if isinstance(body.get("data"), dict) else body
    access = _pick(data, "access_token", "accessToken")
    if not isinstance(access, str) or not access or len(access) > 16384:
        raise UpstreamUnavailable()
    refresh = _pick(data, "refresh_token", "refreshToken")
    if refresh is not None and (not isinstance(refresh, str) or len(refresh) > 16384):
        raise UpstreamUnavailable()
    params = _pick(data, "avatar_params", "avatarParams", "avatarParameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise UpstreamUnavailable()
    token_type = _pick(data, "token_type", "tokenType")
    if not isinstance(token_type, str) or not token_type or len(token_type) > 32:
        token_type = "Bearer"  # noqa: S105 - a scheme name, not a secret

    expires_in = _pick(data, "expires_in", "expiresIn")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    lifetime: float | None = None
    if not isinstance(expires_in, bool) and isinstance(expires_in, int | float) and expires_in > 0:
        lifetime = float(expires_in)
    else:
        exp = jwt_exp(access)
        if exp is not None and exp > now:
            lifetime = exp - now
    if lifetime is None:
        lifetime = float(default_expires_in)
    lifetime = min(lifetime, MAX_LIFETIME)
    return UpstreamTokens(
        access_token=access,
        refresh_token=refresh or None,
        token_type=token_type,
        expires_at=now + lifetime,
        issued_at=now,
        avatar_params=params,
    )


class SentifydClient:
    """Talk to Sentifyd with the server-held API key. One instance (one pool) per app."""

    def __init__(
        self,
        settings: SentifydSettings,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        observer: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.clock = clock
        # observer(call, outcome, seconds): metrics hook, called once per upstream call.
        self.observer = observer

    @staticmethod
    def build_http(
        settings: SentifydSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        return httpx.AsyncClient(
            base_url=settings.backend,
            timeout=httpx.Timeout(settings.timeout),
            # settings.timeout bounds each call as a whole, body included; the body is capped
            # while it streams (bridge.upstream.outbound).
            **bounded(
                transport,
                timeout=settings.timeout,
                max_bytes=settings.max_response_bytes,
                limits=limits,
            ),
            follow_redirects=False,
            headers={"User-Agent": "sentifyd-bridge", "Accept": "application/json"},
        )

    def login_body(self, avatar: AvatarSettings) -> dict[str, str]:
        body = {"avatar_api_key": avatar.api_key.reveal()}
        # Sentifyd's own plugin sends the avatar id on its login path; the documentation's
        # /api/login form does not.
        if self.settings.login_path.rstrip("/") != "/api/login":
            body["avatar_id"] = avatar.avatar_id
        return body

    async def login(self, avatar: AvatarSettings) -> UpstreamTokens:
        login_body = self.login_body(avatar)
        return await self._call("login", avatar, self.settings.login_path, login_body)

    async def refresh(self, avatar: AvatarSettings, refresh_token: str) -> UpstreamTokens:
        body = {"refresh_token": refresh_token, "avatar_id": avatar.avatar_id}
        return await self._call("refresh", avatar, self.settings.refresh_path, body)

    async def _call(
        self, call: str, avatar: AvatarSettings, path: str, body: dict[str, str]
    ) -> UpstreamTokens:
        started = time.perf_counter()
        outcome = "ok"
        with tracing.client_span(f"sentifyd.{call}", **{"bridge.avatar": avatar.name}):
            try:
                return await self._call_with_retries(call, path, body)
            except UpstreamError as exc:
                outcome = exc.code
                raise
            finally:
                tracing.annotate(**{"bridge.outcome": outcome})
                if self.observer is not None:
                    self.observer(call, outcome, time.perf_counter() - started)

    async def _call_with_retries(
        self, call: str, path: str, body: dict[str, str]
    ) -> UpstreamTokens:
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                status, payload = await self._post(path, body)
            except httpx.TimeoutException as exc:
                log.warning("sentifyd %s timed out", call)
                raise UpstreamTimeout() from exc
            except httpx.TransportError as exc:
                # Connection refused or reset: worth another try with backoff.
                log.warning("sentifyd %s failed: %s", call, type(exc).__name__)
                if last:
                    raise UpstreamUnavailable() from exc
                await asyncio.sleep(self.settings.retry_backoff * 2**attempt)
                continue
            except AnswerTooLarge as exc:
                limit = self.settings.max_response_bytes
                log.warning("sentifyd %s answer exceeded %d bytes", call, limit)
                raise UpstreamUnavailable() from exc
            except httpx.RequestError as exc:
                # An answer that does not decode (a broken Content-Encoding) is garbled, not late.
                log.warning("sentifyd %s answer unreadable: %s", call, type(exc).__name__)
                raise UpstreamUnavailable() from exc
            if status >= 500:
                log.warning("sentifyd %s answered %d", call, status)
                if last:
                    raise UpstreamUnavailable()
                await asyncio.sleep(self.settings.retry_backoff * 2**attempt)
                continue
            if status != 200:
                log.warning("sentifyd %s refused with %d", call, status)
                raise UpstreamRejected(status)
            if payload is None:
                raise UpstreamUnavailable()
            return parse_tokens(
                payload, now=self.clock(), default_expires_in=self.settings.default_expires_in
            )
        raise UpstreamUnavailable()  # unreachable: the loop returns or raises

    async def _post(self, path: str, body: dict[str, str]) -> tuple[int, Any]:
        """POST; return (status, parsed JSON or None). The transport bounds time and size."""
        # The current span's traceparent, so Sentifyd's traces continue this one.
        response = await self.http.post(path, json=body, headers=tracing.outgoing_headers())
        if response.status_code != 200:
            return response.status_code, None
        try:
            return 200, json.loads(response.content)
        except (ValueError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
            log.warning("sentifyd answer was not JSON")
            return 200, None
