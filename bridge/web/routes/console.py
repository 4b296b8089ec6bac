"""The operator console at ``{base}/admin/``: find a user, read their token timeline, end
their sessions, block and unblock them; every action audited under the operator's name.

Served only where the admin API is (an admin token is configured) and ``[admin] console`` is
on. An operator signs in by posting an admin token once (:mod:`bridge.web.console`); after
that the console's own cookie authenticates its pages, and every POST must come from this
origin (:mod:`bridge.web.origin`) with the session's form token (:mod:`bridge.web.csrf`).
Pages are rendered on the server, the timeline as SVG (:mod:`bridge.web.timeline`), without
any script.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from quart import Blueprint, Response, current_app, g, redirect, render_template, request

from bridge.errors import BadRequest, ConsoleSignInRequired, InvalidCSRFToken
from bridge.observe.exchange import note
from bridge.sessions.admin import MAX_USER_LENGTH, SESSION_ID_RE, Admin
from bridge.sessions.audit import Operator, refused
from bridge.web.bearer import operator_named_by
from bridge.web.console import ConsoleSessions, SignedIn
from bridge.web.origin import check_same_origin
from bridge.web.routes.admin import MAX_BLOCK
from bridge.web.timeline import WINDOW_LABELS, WINDOWS, Window, build
from bridge.wiring import Bridge

blueprint = Blueprint("console", __name__, url_prefix="/admin")

MAX_TOKEN_FIELD = 1024
BLOCK_CHOICES = ((0, "no block"), (3600, "1 hour"), (86400, "1 day"), (7 * 86400, "7 days"))
AUDIT_ROWS = 50


@blueprint.before_request
async def first_step() -> None:
    # The operator's browser is not the user's client (lifecycle events leave its address out).
    note(operator=True)


@blueprint.after_request
async def last_step(response: Response) -> Response:
    # Ending a user's session here must not clear the operator's own bridge cookie, if any.
    note(session_ended=False)
    return response


@blueprint.app_template_filter("console_time")
def console_time(moment: float | None) -> str:
    """A stored time as the console shows it: UTC, to the second."""
    if moment is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(moment))


def _sessions() -> ConsoleSessions:
    return ConsoleSessions(Bridge.of(current_app))


async def _page(template: str, status: int = 200, **context: Any) -> Response:
    bridge = Bridge.of(current_app)
    signed_in: SignedIn | None = g.get("console")
    body = await render_template(
        template,
        operator=signed_in.session.operator if signed_in else None,
        csrf_token=_sessions().csrf(signed_in) if signed_in else None,
        home_url=bridge.url("/admin/"),
        audit_url=bridge.url("/admin/console/audit"),
        user_url=bridge.url("/admin/console/user"),
        sign_out_url=bridge.url("/admin/sign-out"),
        **context,
    )
    return Response(body, status=status, content_type="text/html; charset=utf-8")


def _to(path: str, **query: str) -> Response:
    url = Bridge.of(current_app).url(path) + (f"?{urlencode(query)}" if query else "")
    return redirect(url, 303)  # type: ignore[return-value]


async def _signed_in() -> SignedIn | None:
    signed_in = await _sessions().current(request)
    g.console = signed_in
    return signed_in


async def _acting() -> Admin:
    """The operator behind a console POST: same origin, signed in, with the form's token."""
    bridge = Bridge.of(current_app)
    check_same_origin(request, bridge.settings.server)
    signed_in = await _signed_in()
    if signed_in is None:
        raise ConsoleSignInRequired()
    form = await request.form
    if not _sessions().csrf_ok(signed_in, form.get("csrf_token")):
        raise InvalidCSRFToken()
    return Admin(bridge, Operator(signed_in.session.operator, "console"))


def _user(value: str | None) -> str:
    if not value or len(value) > MAX_USER_LENGTH:
        raise BadRequest(f"The user id must be 1 to {MAX_USER_LENGTH} characters.")
    return value


# --- signing in and out ---------------------------------------------------------------------


@blueprint.get(
    "/", strict_slashes=False
)  # /admin too: werkzeug's slash redirect is no Quart answer
async def home() -> Response:
    bridge = Bridge.of(current_app)
    signed_in = await _signed_in()
    if signed_in is None:
        return await _page("console_sign_in.html", sign_in_url=bridge.url("/admin/sign-in"))
    entries = await bridge.audit.recent(AUDIT_ROWS)  # a glance, not an action: not recorded
    return await _page("console_home.html", entries=entries, query="")


@blueprint.post("/sign-in")
async def sign_in() -> Response:
    bridge = Bridge.of(current_app)
    check_same_origin(request, bridge.settings.server)
    form = await request.form
    token = form.get("token", "")
    name = None
    if 0 < len(token) <= MAX_TOKEN_FIELD:
        name = operator_named_by(token.strip(), bridge.settings.admin_tokens)
    if name is None:
        refused("console_sign_in", "console", "bad_token")
        await bridge.limiter.count_anonymous(request)  # guessing costs, per address
        return await _page(
            "console_sign_in.html",
            status=401,
            sign_in_url=bridge.url("/admin/sign-in"),
            error="That admin token is not valid.",
        )
    sessions = _sessions()
    cookie, _ = await sessions.start(name)
    await bridge.audit.record(Operator(name, "console"), "console_sign_in")
    response = _to("/admin/")
    sessions.set_cookie(response, cookie)
    return response


@blueprint.post("/sign-out")
async def sign_out() -> Response:
    admin = await _acting()
    signed_in: SignedIn = g.console
    sessions = _sessions()
    await sessions.end(signed_in)
    await admin.audit.record(admin.operator, "console_sign_out")
    response = _to("/admin/")
    sessions.clear_cookie(response)
    return response


# --- a user -----------------------------------------------------------------------------------


@blueprint.get("/console/user")
async def user_page() -> Response:
    bridge = Bridge.of(current_app)
    signed_in = await _signed_in()
    if signed_in is None:
        return _to("/admin/")
    user = _user(request.args.get("user", "").strip())
    window = request.args.get("window", "day")
    if window not in WINDOWS:
        raise BadRequest("window must be one of hour, day, week.")
    chosen: Window = window
    admin = Admin(bridge, Operator(signed_in.session.operator, "console"))
    view = await admin.user(user, events=bridge.settings.lifecycle.max_events)
    timeline = build(view["events"], now=bridge.clock(), window=chosen)
    return await _page(
        "console_user.html",
        user=user,
        view=view,
        timeline=timeline,
        window=chosen,
        window_label=WINDOW_LABELS[chosen].lower(),
        windows=[(w, WINDOW_LABELS[w]) for w in WINDOWS],
        block_choices=BLOCK_CHOICES,
        default_block=bridge.settings.admin.revoke_block,
        max_events=bridge.settings.lifecycle.max_events,
        entries=await bridge.audit.recent(AUDIT_ROWS, user=user),
        query=user,
        revoke_session_url=bridge.url("/admin/console/revoke-session"),
        revoke_user_url=bridge.url("/admin/console/revoke-user"),
        unblock_url=bridge.url("/admin/console/unblock"),
    )


@blueprint.post("/console/revoke-session")
async def revoke_session() -> Response:
    admin = await _acting()
    form = await request.form
    user = _user(form.get("user"))
    session_id = form.get("session", "")
    if not SESSION_ID_RE.match(session_id):
        raise BadRequest("A session id is 32 lowercase hex characters.")
    await admin.revoke_session(session_id, user=user)  # a session already gone: audited as such
    return _to("/admin/console/user", user=user, window=_window(form.get("window")))


@blueprint.post("/console/revoke-user")
async def revoke_user() -> Response:
    admin = await _acting()
    form = await request.form
    user = _user(form.get("user"))
    raw = form.get("block", "")
    if not (raw.isascii() and raw.isdigit()) or not 0 <= int(raw) <= MAX_BLOCK:
        raise BadRequest(f"block must be a whole number from 0 to {MAX_BLOCK}.")
    await admin.revoke_user(user, block=int(raw))
    return _to("/admin/console/user", user=user, window=_window(form.get("window")))


@blueprint.post("/console/unblock")
async def unblock() -> Response:
    admin = await _acting()
    form = await request.form
    user = _user(form.get("user"))
    await admin.unblock(user)
    return _to("/admin/console/user", user=user, window=_window(form.get("window")))


def _window(value: str | None) -> str:
    return value if value in WINDOWS else "day"


# --- the audit trail --------------------------------------------------------------------------


@blueprint.get("/console/audit")
async def audit_page() -> Response:
    bridge = Bridge.of(current_app)
    signed_in = await _signed_in()
    if signed_in is None:
        return _to("/admin/")
    user = request.args.get("user", "").strip() or None
    actor = request.args.get("actor", "").strip() or None
    if actor is not None and len(actor) > MAX_USER_LENGTH:
        raise BadRequest(f"actor must be 1 to {MAX_USER_LENGTH} characters.")
    admin = Admin(bridge, Operator(signed_in.session.operator, "console"))
    entries = await admin.audit_trail(
        200, user=_user(user) if user is not None else None, actor=actor
    )
    return await _page(
        "console_audit.html", entries=entries, user=user or "", actor=actor or "", query=""
    )
