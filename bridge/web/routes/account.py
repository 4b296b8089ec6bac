"""The visitor's own "my devices" page: their live avatar sessions, and signing them out.

``GET /account/sessions`` shows the sessions of the visitor the site's login recognises (the
gate's way in, whichever is configured): this one marked, each with its device label, when it
started and was last used, and its avatars. HTML for a browser, JSON for ``Accept:
application/json``. Two same-origin POSTs with the page's CSRF token end sessions:
``/account/sessions/end`` one of them (``session``: its reference on the page) and
``/account/sessions/end-others`` all but this one, recorded as ``session_ended`` with reason
``user_signed_out_device`` or ``user_signed_out_others``.

A session is named on the page by an opaque reference, an HMAC of its id bound to the viewer
(their own session, else their user): never its id, which keys its records in the store. The
sessions end through :meth:`bridge.sessions.manager.SessionManager.end`, as an operator's
revoke does, so a token request of theirs already in flight hands out nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

from quart import Blueprint, Response, current_app, jsonify, redirect, render_template, request

from bridge.errors import BadRequest, InvalidCSRFToken, LoginRequired, UnknownSession
from bridge.gate import Visitor
from bridge.identity import Identity
from bridge.observe.exchange import current as current_exchange
from bridge.observe.exchange import note
from bridge.secret import Secret
from bridge.sessions.manager import SessionRecord
from bridge.web.csrf import ACCOUNT, check_csrf_token, csrf_token
from bridge.web.origin import check_same_origin
from bridge.wiring import Bridge

blueprint = Blueprint("account", __name__)

PAGE = "/account/sessions"
REF_LENGTH = 24  # hex digits: 96 bits, per viewer
_REF_RE = re.compile(rf"^[0-9a-f]{{{REF_LENGTH}}}$")
MAX_SHOWN_COUNT = 1000  # the "?ended=" notice of a form's answer is only ever a small count


class AvatarView(TypedDict):
    name: str
    title: str


class DeviceView(TypedDict):
    """What the visitor sees of one of their sessions."""

    ref: str
    device: str
    current: bool
    started_at: float
    last_used_at: float
    avatars: list[AvatarView]


class UserView(TypedDict):
    name: str


class SessionsPage(TypedDict):
    """``GET /account/sessions`` as JSON."""

    user: UserView
    sessions: list[DeviceView]
    csrf_token: str
    end_url: str
    end_others_url: str


def session_ref(key: Secret, binding: str, session_id: str) -> str:
    """The page's name for session ``session_id``, as the viewer ``binding`` sees it."""
    message = f"sentifyd-bridge/session-ref/v1:{binding}:{session_id}".encode()
    return hmac.new(key.reveal().encode(), message, hashlib.sha256).hexdigest()[:REF_LENGTH]


def _binding(visitor: Visitor, identity: Identity) -> str:
    # The viewer's own session when they have one here, else their user (a visitor whose site
    # login is valid but who has not talked to an avatar in this browser yet).
    return visitor.record.id if visitor.record is not None else "user:" + identity.subject


def _wants_json() -> bool:
    accept = request.accept_mimetypes
    return accept.best_match(["text/html", "application/json"]) == "application/json"


async def _live_sessions(bridge: Bridge, subject: str) -> list[SessionRecord]:
    now = bridge.clock()
    idle = bridge.settings.session.idle_timeout
    return [
        record
        for record in await bridge.sessions.sessions_of(subject)
        if now < record.expires_at and now - record.last_seen < idle
    ]


def _view(bridge: Bridge, record: SessionRecord, binding: str, current: bool) -> DeviceView:
    avatars: list[AvatarView] = []
    for name in sorted({chain.avatar for chain in record.chains}):
        avatar = bridge.settings.avatar(name)
        title = (avatar.title if avatar is not None else "") or name
        avatars.append({"name": name, "title": title})
    return {
        "ref": session_ref(bridge.settings.secret_keys[0], binding, record.id),
        "device": record.device or "Unknown device",
        "current": current,
        "started_at": round(record.created_at),
        "last_used_at": round(record.last_seen),
        "avatars": avatars,
    }


def _signed_out(bridge: Bridge) -> Response:
    """Send a visitor nobody recognises to the site's login (401 JSON with ``login_url``)."""
    login_url = bridge.gate.login_url(bridge.url(PAGE))
    if _wants_json():
        raise LoginRequired(login_url)
    return redirect(login_url or "/", 302)  # type: ignore[return-value]


@blueprint.get(PAGE)
async def sessions_page() -> Response:
    bridge = Bridge.of(current_app)
    as_json = _wants_json()
    if as_json:
        check_same_origin(request, bridge.settings.server)  # the JSON carries the form token
    visitor = await bridge.gate.identify(request)
    identity = visitor.identity
    if identity is None:
        return _signed_out(bridge)
    binding = _binding(visitor, identity)
    this = visitor.record.id if visitor.record is not None else None
    records = await _live_sessions(bridge, identity.subject)
    # This device first, then the most recently used.
    records.sort(key=lambda r: (r.id != this, -r.last_seen))
    devices = [_view(bridge, r, binding, r.id == this) for r in records]
    token = csrf_token(bridge.settings.secret_keys, binding, purpose=ACCOUNT)
    end_url, end_others_url = bridge.url(PAGE + "/end"), bridge.url(PAGE + "/end-others")
    if as_json:
        body: SessionsPage = {
            "user": {"name": _display_name(identity)},
            "sessions": devices,
            "csrf_token": token,
            "end_url": end_url,
            "end_others_url": end_others_url,
        }
        return jsonify(body)  # no-store, like every answer but static files (bridge.app)
    ended = request.args.get("ended", "")
    now = bridge.clock()
    html = await render_template(
        "account_sessions.html",
        title="Your devices",
        user=_display_name(identity),
        devices=[
            {
                **device,
                "started": _when(device["started_at"]),
                "last_used": _ago(now - device["last_used_at"]),
            }
            for device in devices
        ],
        others=sum(1 for d in devices if not d["current"]),
        has_current=this is not None,
        csrf_token=token,
        end_url=end_url,
        end_others_url=end_others_url,
        ended=int(ended) if ended.isdigit() and int(ended) <= MAX_SHOWN_COUNT else None,
        back_url=bridge.page_path(bridge.settings.avatars[0].name),
    )
    return Response(html, content_type="text/html; charset=utf-8")


@blueprint.post(PAGE + "/end")
async def end_one() -> Response:
    post = await _signed_in_post()
    if isinstance(post, Response):
        return post
    bridge = post.bridge
    ref = post.form.get("session")
    if not isinstance(ref, str) or not _REF_RE.match(ref):
        raise BadRequest("session must be a reference the page gave out.")
    for record in await _live_sessions(bridge, post.identity.subject):
        for key in bridge.settings.secret_keys:
            if hmac.compare_digest(session_ref(key, post.binding, record.id), ref):
                await _end(bridge, post.visitor, record, "user_signed_out_device")
                return _done(bridge, 1)
    raise UnknownSession()


@blueprint.post(PAGE + "/end-others")
async def end_others() -> Response:
    post = await _signed_in_post()
    if isinstance(post, Response):
        return post
    bridge, visitor = post.bridge, post.visitor
    this = visitor.record.id if visitor.record is not None else None
    ended = 0
    for record in await _live_sessions(bridge, post.identity.subject):
        if record.id != this and await _end(bridge, visitor, record, "user_signed_out_others"):
            ended += 1
    return _done(bridge, ended)


@dataclass
class _SignedInPost:
    bridge: Bridge
    visitor: Visitor
    identity: Identity
    binding: str  # what the page's references and CSRF token are bound to
    form: dict[str, object]


async def _signed_in_post() -> _SignedInPost | Response:
    """The checks every action of this page runs first, in this order: same origin, a signed-in
    visitor (else the signed-out answer, returned), and the viewer's own CSRF token."""
    bridge = Bridge.of(current_app)
    check_same_origin(request, bridge.settings.server)
    visitor = await bridge.gate.identify(request)
    identity = visitor.identity
    if identity is None:
        return _signed_out(bridge)
    binding = _binding(visitor, identity)
    form = await _checked_form(bridge, binding)
    return _SignedInPost(bridge, visitor, identity, binding, form)


async def _end(bridge: Bridge, visitor: Visitor, record: SessionRecord, reason: str) -> bool:
    """End ``record``; clear this browser's cookie only if the session was this browser's."""
    exchange = current_exchange()
    clearing = exchange.session_ended if exchange is not None else False
    ended = await bridge.sessions.end(record, reason)
    # end() notes that the answer clears the cookie, as for an ending of the requester's own.
    own = visitor.record is not None and visitor.record.id == record.id
    note(session_ended=clearing or own)
    return ended


async def _checked_form(bridge: Bridge, binding: str) -> dict[str, object]:
    """The POST's fields (a form or a JSON object), once its CSRF token is the viewer's.

    A JSON object's fields may be of any type: each reader checks the type of those it reads.
    """
    fields: dict[str, object]
    if request.is_json:
        try:
            body = await request.get_json(silent=True)
        # "silent" covers bad JSON, not bad UTF-8 nor JSON nested beyond Python's stack.
        except (UnicodeDecodeError, RecursionError) as exc:
            raise BadRequest("The body is not valid UTF-8 JSON.") from exc
        fields = body if isinstance(body, dict) else {}
    else:
        fields = dict((await request.form).items())
    sent = fields.get("csrf_token") or request.headers.get("X-CSRF-Token")
    if not isinstance(sent, str) or not check_csrf_token(
        bridge.settings.secret_keys, binding, sent, purpose=ACCOUNT
    ):
        raise InvalidCSRFToken()
    return fields


def _done(bridge: Bridge, ended: int) -> Response:
    if _wants_json():
        return jsonify({"ended": ended})
    return redirect(f"{bridge.url(PAGE)}?ended={ended}", 303)  # type: ignore[return-value]


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%-d %b %Y, %H:%M UTC")


def _ago(seconds: float) -> str:
    """ "just now", "5 minutes ago", "3 hours ago", "2 days ago"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        count = int(seconds // size)
        if count >= 1:
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def _display_name(identity: Identity) -> str:
    claims = identity.claims
    for claim in ("name", "email"):
        value = claims.get(claim)
        if isinstance(value, str) and value:
            return value
    return identity.subject
