"""Sign-in and sign-out: ``/login``, the OIDC callback, ``/logout``, ``/backchannel-logout``
and ``/session``."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict
from urllib.parse import urlencode

from quart import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
)

from bridge.access.rules import is_allowed
from bridge.errors import HTTPError, InvalidCSRFToken, NotFound, RateLimited
from bridge.identity.oidc import METHOD as OIDC
from bridge.sessions.oidc_login import STATE_TTL, OIDCLogin
from bridge.web.csrf import check_csrf_token, csrf_token
from bridge.web.origin import check_same_origin
from bridge.web.redirects import is_local_path, safe_next
from bridge.wiring import Bridge

LOGOUT_PATH = "/logout"


def _oidc(bridge: Bridge) -> OIDCLogin:
    login = bridge.oidc_login
    if login is None:
        raise NotFound()
    return login


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


class _CookieAttributes(TypedDict):
    path: str
    secure: bool
    httponly: bool
    samesite: str


class _SignedOut(TypedDict):
    signed_in: Literal[False]
    login_url: str | None


class _User(TypedDict):
    subject: str
    name: str | None
    email: str | None


class _SessionEnds(TypedDict):
    expires_at: int
    absolute_expires_at: int


class _Logout(TypedDict):
    url: str
    method: str  # POST for a path on this site (with this session's csrf_token), else GET
    csrf_token: NotRequired[str]


class _Avatar(TypedDict):
    name: str
    title: str
    page: str
    token_endpoint: str


class _SignedIn(TypedDict):
    """``GET /session`` for a visitor the site's login recognises."""

    signed_in: Literal[True]
    method: str
    user: _User
    session: _SessionEnds | None
    logout: _Logout | None
    avatars: list[_Avatar]


def _binding(bridge: Bridge) -> _CookieAttributes:
    """The login-binding cookie's attributes, the same when it is set and when it is deleted."""
    secure = bridge.settings.session.cookie_secure
    return {"path": "/", "secure": secure, "httponly": True, "samesite": "Lax"}


async def login() -> Response:
    """Start an OIDC login (``?next=`` same-origin path, ``?provider=`` name)."""
    bridge = Bridge.of(current_app)
    oidc = _oidc(bridge)
    await bridge.limiter.check_login(request)
    next_path = safe_next(request.args.get("next"))
    name = request.args.get("provider")
    if name is None and len(oidc.providers) > 1:
        choices = [
            {
                "title": p.settings.title or p.name,
                "url": bridge.url("/login")
                + "?"
                + urlencode({"provider": p.name, "next": next_path}),
            }
            for p in oidc.providers.values()
        ]
        body = await render_template("login_choice.html", providers=choices)
        return _no_store(Response(body, content_type="text/html; charset=utf-8"))
    provider = oidc.provider(name)
    url, binding = await oidc.start(provider, next_path, request.cookies.get(oidc.binding_cookie))
    response: Response = redirect(url, 302)  # type: ignore[assignment]
    response.set_cookie(oidc.binding_cookie, binding, max_age=STATE_TTL, **_binding(bridge))
    return _no_store(response)


async def callback() -> Response:
    """Finish an OIDC login: a fresh bridge session, then back to where the visitor was."""
    bridge = Bridge.of(current_app)
    oidc = _oidc(bridge)
    old_token = bridge.sessions.cookie_token(request)
    try:
        finished = await oidc.finish(request.args, request.cookies.get(oidc.binding_cookie))
    except HTTPError as exc:
        # Refused (a bad callback, or the user's new-session limit): nothing was stored, and
        # the session this browser may already have is left as it was.
        if not request.accept_mimetypes.accept_html:
            raise
        # A person's browser landed here: a page with a way forward, not a JSON body.
        title, message = "Sign-in did not complete", exc.message
        if isinstance(exc, RateLimited):
            title = "Too many sign-ins"
            message = (
                "This account has started too many sessions just now; "
                f"please try again in {exc.retry_after} seconds."
            )
        body = await render_template(
            "message.html",
            title=title,
            message=message,
            status=exc.status,
            action={"url": bridge.url("/login"), "label": "Try again"},
        )
        page = Response(body, status=exc.status, content_type="text/html; charset=utf-8")
        page.headers.update(exc.headers())
        return _no_store(page)
    if old_token:
        # Whoever was signed in in this browser before is not any more.
        old = await bridge.sessions.load(old_token)
        if old is not None:
            await bridge.sessions.end(old, "logout")
    response: Response = redirect(finished.next_path, 303)  # type: ignore[assignment]
    bridge.sessions.set_cookie(response, finished.session.cookie_token)
    response.delete_cookie(oidc.binding_cookie, **_binding(bridge))
    return _no_store(response)


async def logout() -> Response:
    """End the bridge session (same-origin, with the session's CSRF token), then sign out at
    the provider when it offers RP-initiated logout."""
    bridge = Bridge.of(current_app)
    check_same_origin(request, bridge.settings.server)
    form = await request.form
    oidc = bridge.oidc_login
    default = "/"
    if oidc is not None:
        default = bridge.url(next(iter(oidc.providers.values())).settings.post_logout_redirect_path)
    next_path = safe_next(form.get("next") or request.args.get("next"), default)
    token = bridge.sessions.cookie_token(request)
    record = await bridge.sessions.load(token) if token else None
    target: str | None = None
    if record is not None and token is not None:
        sent = form.get("csrf_token") or request.headers.get("X-CSRF-Token")
        if not check_csrf_token(bridge.settings.secret_keys, record.id, sent):
            raise InvalidCSRFToken()
        if record.method == OIDC and oidc is not None:
            target = await oidc.logout(record, token)
        else:
            await bridge.sessions.end(record, "logout")
    response: Response = redirect(target or next_path, 303)  # type: ignore[assignment]
    bridge.sessions.clear_cookie(response)
    return _no_store(response)


async def backchannel_logout() -> Response:
    """OpenID Connect Back-Channel Logout 1.0: the provider tells which sessions are over."""
    bridge = Bridge.of(current_app)
    oidc = _oidc(bridge)
    # The provider calls from its server (no Sec-Fetch-Site, no Origin); a browser may not.
    check_same_origin(request, bridge.settings.server)
    form = await request.form
    ended = await oidc.backchannel_logout(form.get("logout_token"))
    return _no_store(jsonify({"status": "ok", "sessions_ended": ended}))


async def session() -> Response:
    """Tell the page who is signed in, until when, how to sign out, and which avatars are theirs."""
    bridge = Bridge.of(current_app)
    check_same_origin(request, bridge.settings.server)
    visitor = await bridge.gate.identify(request)
    identity = visitor.identity
    if identity is None:
        signed_out: _SignedOut = {"signed_in": False, "login_url": bridge.gate.login_url("/")}
        response = jsonify(signed_out)
        response.vary.add("Cookie")
        return _no_store(response)
    record = visitor.record
    claims = identity.claims
    body: _SignedIn = {
        "signed_in": True,
        "method": identity.method,
        "user": {
            "subject": identity.subject,
            "name": claims.get("name") if isinstance(claims.get("name"), str) else None,
            "email": claims.get("email") if isinstance(claims.get("email"), str) else None,
        },
        "session": None,
        "logout": None,
        "avatars": [
            {
                "name": avatar.name,
                "title": avatar.title or avatar.name,
                "page": bridge.page_path(avatar.name),
                "token_endpoint": bridge.token_path(avatar.name),
            }
            for avatar in bridge.settings.avatars
            if is_allowed(avatar.allow, identity)
        ],
    }
    if record is not None:
        idle_end = record.last_seen + bridge.settings.session.idle_timeout
        body["session"] = {
            "expires_at": int(min(record.expires_at, idle_end)),
            "absolute_expires_at": int(record.expires_at),
        }
        body["logout"] = {
            "url": bridge.url(LOGOUT_PATH),
            "method": "POST",
            "csrf_token": csrf_token(bridge.settings.secret_keys, record.id),
        }
    elif bridge.logout_url:
        url = bridge.logout_url
        # The same rule as the avatar page: a path on this site is a POST form, else a link.
        body["logout"] = {"url": url, "method": "POST" if is_local_path(url) else "GET"}
    response = jsonify(body)
    response.vary.add("Cookie")
    return _no_store(response)


def make_blueprint(callback_paths: list[str]) -> Blueprint:
    """Build the blueprint; every configured provider's ``redirect_path`` is a callback."""
    blueprint = Blueprint("auth", __name__)
    blueprint.add_url_rule("/login", "login", login, methods=["GET"])
    for index, path in enumerate(sorted(set(callback_paths))):
        blueprint.add_url_rule(path, f"callback_{index}", callback, methods=["GET"])
    blueprint.add_url_rule(LOGOUT_PATH, "logout", logout, methods=["POST"])
    blueprint.add_url_rule(
        "/backchannel-logout", "backchannel_logout", backchannel_logout, methods=["POST"]
    )
    blueprint.add_url_rule("/session", "session", session, methods=["GET"])
    return blueprint
