"""The admin API: a user's sessions and events, paged session lists, revocation, the audit.

Registered only when an admin token is configured (``BRIDGE_ADMIN_TOKEN``, ``_TOKENS`` or
``_TOKENS_FILE``); every call needs one as a bearer token, and is recorded in the audit trail
under that token's name. Answers are JSON and never carry a token, a handle or a cookie (see
:mod:`bridge.sessions.admin`).

Not callable cross-site: authentication is the ``Authorization`` header alone, never a cookie
(see :mod:`bridge.web.bearer`), and requests a browser marks as from another origin, same-site
included, are refused outright (:mod:`bridge.web.origin`).
"""

from __future__ import annotations

import msgspec
from quart import Blueprint, Response, current_app, g, jsonify, request

from bridge.errors import BadRequest, NotFound, Unauthorized
from bridge.observe.exchange import note
from bridge.sessions.admin import MAX_PAGE, MAX_USER_LENGTH, SESSION_ID_RE, Admin
from bridge.sessions.audit import Operator, refused
from bridge.web.bearer import require_operator
from bridge.web.origin import check_same_origin
from bridge.wiring import Bridge

blueprint = Blueprint("admin", __name__, url_prefix="/admin")

MAX_BLOCK = 30 * 86400


def _admin() -> Admin:
    operator: Operator = g.operator
    return Admin(Bridge.of(current_app), operator)


@blueprint.before_request
async def authenticate() -> None:
    bridge = Bridge.of(current_app)
    check_same_origin(request, bridge.settings.server)
    try:
        name = require_operator(request, bridge.settings.admin_tokens)
    except Unauthorized:
        refused(request.endpoint or "admin", "admin_api", "bad_bearer_token")
        raise
    g.operator = Operator(name, "admin_api")
    note(operator=True)  # lifecycle events caused here do not record this client as the user's


@blueprint.after_request
async def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    # Ending sessions here marks the request as one whose session ended, but the caller is an
    # operator, not the visitor whose cookie should be cleared.
    note(session_ended=False)
    return response


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}.")
    return int(raw)


def _user(user: str) -> str:
    if not user or len(user) > MAX_USER_LENGTH:
        raise BadRequest(f"The user id must be 1 to {MAX_USER_LENGTH} characters.")
    return user


def _session_id(value: str) -> str:
    if not SESSION_ID_RE.match(value):
        raise BadRequest("A session id is 32 lowercase hex characters.")
    return value


@blueprint.get("/users/<user>")
async def show_user(user: str) -> Response:
    bridge = Bridge.of(current_app)
    events = _int_arg("events", 50, 0, bridge.settings.lifecycle.max_events)
    return jsonify(await _admin().user(_user(user), events=events))


@blueprint.get("/sessions")
async def list_sessions() -> Response:
    bridge = Bridge.of(current_app)
    avatar = request.args.get("avatar") or None
    if avatar is not None and bridge.settings.avatar(avatar) is None:
        raise BadRequest("avatar must be the name of a configured avatar.")
    user = request.args.get("user") or None
    cursor = request.args.get("cursor") or None
    page = await _admin().list_sessions(
        user=_user(user) if user is not None else None,
        avatar=avatar,
        cursor=_session_id(cursor) if cursor is not None else None,
        limit=_int_arg("limit", 50, 1, MAX_PAGE),
    )
    return jsonify(page)


@blueprint.delete("/users/<user>/sessions")
async def revoke_user(user: str) -> Response:
    bridge = Bridge.of(current_app)
    block = _int_arg("block", bridge.settings.admin.revoke_block, 0, MAX_BLOCK)
    return jsonify(await _admin().revoke_user(_user(user), block=block))


@blueprint.delete("/users/<user>/block")
async def unblock_user(user: str) -> Response:
    return jsonify(await _admin().unblock(_user(user)))


@blueprint.delete("/sessions/<session_id>")
async def revoke_session(session_id: str) -> Response:
    if not await _admin().revoke_session(_session_id(session_id)):
        raise NotFound("No live session has that id.")
    return jsonify({"id": session_id, "ended": True})


@blueprint.get("/audit")
async def audit_trail() -> Response:
    bridge = Bridge.of(current_app)
    limit = _int_arg("limit", 100, 1, bridge.settings.admin.audit_max_entries)
    user = request.args.get("user") or None
    actor = request.args.get("actor") or None
    if actor is not None and len(actor) > MAX_USER_LENGTH:
        raise BadRequest(f"actor must be 1 to {MAX_USER_LENGTH} characters.")
    entries = await _admin().audit_trail(
        limit, user=_user(user) if user is not None else None, actor=actor
    )
    return jsonify({"entries": [msgspec.to_builtins(entry) for entry in entries]})
