"""One JSON log line per request, a request id on every answer, and the token-request metric.

The line holds the method, the path without its query string (the component sends its handle
there), the status, the duration, the request id and the hashed session id: never a header,
a cookie, a token or a body.

A request id arriving in ``X-Request-ID`` is believed only when the direct peer is a trusted
proxy, which the proxy middleware marks with ``scope["bridge.trusted_proxy"] = True``; otherwise
any visitor could plant ids in our logs. Anything else gets a fresh random id.
"""

from __future__ import annotations

import logging
import re
import time

from quart import Response

from bridge.observe import logs, tracing
from bridge.observe.exchange import Exchange, close_exchange, open_exchange
from bridge.observe.incoming import Incoming
from bridge.observe.metrics import Metrics
from bridge.secret import token_hex
from bridge.wiring import Bridge

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")
TRUSTED_PROXY_FLAG = "bridge.trusted_proxy"
TOKEN_ENDPOINT = "tokens.request_tokens"  # noqa: S105 - an endpoint name
MAX_LOGGED_PATH = 256

log = logging.getLogger("bridge.request")


def incoming_request_id(request: Incoming) -> str | None:
    """Return the proxy's request id when the peer is a trusted proxy and the id is sane."""
    if request.scope.get(TRUSTED_PROXY_FLAG) is not True:
        return None
    value = request.headers.get(REQUEST_ID_HEADER, "")
    return value if REQUEST_ID_RE.fullmatch(value) else None


def start(request: Incoming, endpoint: str | None) -> Exchange:
    """Begin a request: note when, and give it an id (the proxy's, or a fresh one)."""
    exchange = Exchange(
        request=request,
        started=time.perf_counter(),
        request_id=incoming_request_id(request) or token_hex(16),
        endpoint=endpoint,
    )
    open_exchange(exchange)
    logs.request_id.set(exchange.request_id)
    return exchange


def finish(
    response: Response, exchange: Exchange, bridge: Bridge, metrics: Metrics | None
) -> Response:
    """End a request: its id on the answer, its log line, and the token-request metric."""
    request = exchange.request
    response.headers[REQUEST_ID_HEADER] = exchange.request_id
    status = response.status_code
    fields: dict[str, object] = {
        "method": request.method,
        "path": request.path[:MAX_LOGGED_PATH],
        "status": status,
        "duration_ms": round((time.perf_counter() - exchange.started) * 1000, 2),
        "request_id": exchange.request_id,
    }
    session_id = exchange.session_id or _session_id_from_cookie(bridge, request)
    if session_id:
        fields["session"] = session_id
    if exchange.endpoint == TOKEN_ENDPOINT:
        avatar = exchange.avatar or _avatar_of_request(bridge, request)
        outcome = exchange.error_code or ("ok" if status < 400 else "http_error")
        fields["avatar"] = avatar
        fields["outcome"] = outcome
        if metrics is not None:
            metrics.observe_token_request(avatar, status, outcome)
    if tracing.active():
        _trace(request, fields)
    logs.info_fields(log, "request", fields)
    logs.request_id.set(None)
    close_exchange()
    return response


def _trace(request: Incoming, fields: dict[str, object]) -> None:
    """Name the request's span by its route; give it the avatar, outcome and hashed session."""
    rule = request.url_rule
    tracing.name_request(request.method, rule.rule if rule is not None else None)
    named = {f"bridge.{name}": fields.get(name) for name in ("avatar", "outcome", "session")}
    tracing.annotate(**{name: value for name, value in named.items() if isinstance(value, str)})


def _session_id_from_cookie(bridge: Bridge, request: Incoming) -> str | None:
    # The id is a hash of the cookie value: safe to log, and no store read to find it.
    token = bridge.sessions.cookie_token(request)
    return bridge.sessions.session_id(token) if token else None


def _avatar_of_request(bridge: Bridge, request: Incoming) -> str | None:
    name = (request.view_args or {}).get("avatar_name")
    avatar = bridge.settings.avatar(name)
    return avatar.name if avatar else None
