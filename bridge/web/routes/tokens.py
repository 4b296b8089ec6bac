"""The token endpoint the ``<sentifyd-bot>`` component calls (its ``token-endpoint``)."""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Blueprint, Request, Response, current_app
from quart import request as current_request

from bridge.errors import (
    BadRequest,
    InvalidRefreshToken,
    LoginRequired,
    RequestTooLarge,
    SessionGone,
    UnknownAvatar,
)
from bridge.observe.exchange import note
from bridge.observe.incoming import Incoming
from bridge.web.origin import check_same_origin
from bridge.wiring import Bridge

blueprint = Blueprint("tokens", __name__)

MAX_QUERY_LENGTH = 4096
MAX_HANDLE_LENGTH = 256
_encode = msgspec.json.Encoder(enc_hook=str).encode  # settings' names are str subclasses


async def read_handle(request: Incoming) -> str | None:
    """Return the ``refreshToken`` the component sent (query, form or JSON body), if any."""
    if len(request.query_string) > MAX_QUERY_LENGTH:
        raise RequestTooLarge()
    handle: Any = request.args.get("refreshToken")
    if handle is None and request.method == "POST" and isinstance(request, Request):
        if request.is_json:
            try:
                body = await request.get_json(silent=True)
            # "silent" covers bad JSON, not bad UTF-8 nor JSON nested beyond Python's stack.
            except (UnicodeDecodeError, RecursionError) as exc:
                raise BadRequest("The body is not valid UTF-8 JSON.") from exc
            handle = body.get("refreshToken") if isinstance(body, dict) else None
        else:
            form = await request.form
            handle = form.get("refreshToken")
    if handle is None or handle == "":
        return None
    if not isinstance(handle, str) or len(handle) > MAX_HANDLE_LENGTH:
        raise BadRequest("refreshToken must be the string this endpoint gave out.")
    return handle


@blueprint.route("/request_tokens", methods=["GET", "POST"])
@blueprint.route("/request_tokens/<avatar_name>", methods=["GET", "POST"])
async def request_tokens(avatar_name: str | None = None) -> Response:
    # The request itself, not its context-local proxy: every attribute read of the proxy
    # looks the context up again, and the gate and the sources read it many times.
    request: Request = current_request._get_current_object()  # type: ignore[attr-defined]
    return await answer(Bridge.of(current_app), request, avatar_name)


async def answer(bridge: Bridge, request: Incoming, avatar_name: str | None) -> Response:
    """The token endpoint's answer: through Quart above, or its direct path for GETs
    (:class:`bridge.web.fastpath.TokenFastPath`); it reads no Quart context."""
    cors_origin = check_same_origin(request, bridge.settings.server)
    avatar = bridge.settings.avatar(avatar_name)
    if avatar is None:
        raise UnknownAvatar()
    note(avatar=avatar.name)  # named in the request log and in the events it causes
    handle = await read_handle(request)
    page = bridge.page_path(avatar.name)
    _, ctx = await bridge.gate.admit(request, avatar, next_path=page, create=handle is None)
    try:
        if ctx is None:
            # A refresh needs the session that issued the handle; never start one for it.
            raise InvalidRefreshToken()
        # The per-session limits count in the live session's record (the broker's write), so
        # a made-up cookie stores no counter.
        if handle is None:
            tokens = await bridge.broker.issue(ctx, avatar)
        else:
            tokens = await bridge.broker.refresh(ctx, avatar, handle)
    except SessionGone as exc:
        raise LoginRequired(bridge.gate.login_url(page)) from exc
    # The contract's body, encoded as jsonify would (same keys, order and newline), faster.
    response = Response(_encode(tokens.body()) + b"\n", mimetype="application/json")
    if ctx.is_new:
        bridge.sessions.set_cookie(response, ctx.cookie_token)
    if cors_origin:
        response.headers["Access-Control-Allow-Origin"] = cors_origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
    return response
