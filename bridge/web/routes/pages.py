"""The avatar page: ``<sentifyd-bot>`` wired to this bridge's token endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from quart import Blueprint, Response, current_app, redirect, render_template, request

from bridge.access.rules import is_allowed
from bridge.errors import UnknownAvatar
from bridge.settings.schema import Settings
from bridge.web.csrf import csrf_token
from bridge.web.redirects import is_local_path
from bridge.wiring import Bridge

blueprint = Blueprint("pages", __name__)


async def _page(avatar_name: str | None) -> Response:
    bridge = Bridge.of(current_app)
    avatar = bridge.settings.avatar(avatar_name)
    if avatar is None:
        raise UnknownAvatar()
    page = bridge.page_path(avatar.name)
    visitor = await bridge.gate.identify(request)
    if visitor.identity is None:
        target = bridge.gate.login_url(page) or "/"
        return redirect(target, 302)  # type: ignore[return-value]
    identity = visitor.identity
    if not is_allowed(avatar.allow, identity):
        await bridge.limiter.count_anonymous(request)  # a refusal: anonymous work, per address
        await bridge.lifecycle.emit(
            "access_denied",
            user=identity.subject,
            avatar=avatar.name,
            session_id=visitor.record.id if visitor.record else None,
        )
        body = await render_template(
            "message.html",
            title="Not available for your account",
            message="Your account is signed in, but this avatar is reserved for other customers.",
            status=403,
            action=_sign_out(bridge),
        )
        return Response(body, status=403, content_type="text/html; charset=utf-8")
    settings = bridge.settings
    logout_url, csrf = bridge.logout_url or None, None
    if visitor.record is not None and visitor.record.method == "oidc":
        # An SSO session signs out here (then at the provider), with a token no other site has.
        logout_url = bridge.url("/logout")
        csrf = csrf_token(settings.secret_keys, visitor.record.id)
    attributes = {**settings.component.attributes, **avatar.attributes}
    others = [
        {"name": a.name, "title": a.title or a.name, "url": bridge.page_path(a.name)}
        for a in settings.avatars
        if is_allowed(a.allow, identity)
    ]
    body = await render_template(
        "avatar.html",
        avatar=avatar,
        title=avatar.title or "Talk to our assistant",
        element=settings.component.element,
        token_endpoint=bridge.token_path(avatar.name),
        script_src=settings.component.script,
        script_type=settings.component.script_type,
        attributes=attributes,
        user=str(identity.claims.get("name") or identity.claims.get("email") or identity.subject),
        logout_url=logout_url,
        logout_local=bool(logout_url) and is_local_path(logout_url or ""),
        csrf_token=csrf,
        avatars=others,
        devices_url=bridge.url("/account/sessions"),
        demo=settings.demo,
    )
    # The Content-Security-Policy is the app's, on every HTML answer (bridge.app).
    response = Response(body, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _sign_out(bridge: Bridge) -> dict[str, str] | None:
    url = bridge.logout_url
    if not url:
        return None
    return {"url": url, "label": "Sign out", "method": "post" if is_local_path(url) else "get"}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(settings: Settings) -> str:
    """The one policy of every HTML answer: the avatar page, the sign-in and error pages."""
    # Signing out of SSO answers the form with a redirect to the provider's end-session endpoint,
    # and browsers hold a form's redirects to form-action too.
    providers = [_origin(provider.issuer) for provider in settings.oidc]
    return _csp(settings.component.script, providers)


def _csp(script: str, form_targets: Sequence[str] = ()) -> str:
    parts = urlsplit(script)
    script_origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    # The component talks to Sentifyd over https and WebSockets, and plays media from it.
    sentifyd = "https://*.sentifyd.io wss://*.sentifyd.io"
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {script_origin}".strip(),
            "style-src 'self' 'unsafe-inline'",
            f"connect-src 'self' {sentifyd}",
            "img-src 'self' data: blob: https://*.sentifyd.io",
            "media-src 'self' blob: data: https://*.sentifyd.io",
            "font-src 'self' data: https://*.sentifyd.io",
            "frame-ancestors 'self'",
            "base-uri 'none'",
            " ".join(["form-action 'self'", *form_targets]),
        ]
    )


@blueprint.get("/")
async def first_avatar() -> Response:
    return await _page(None)


@blueprint.get("/avatars/<name>")
async def avatar_page(name: str) -> Response:
    return await _page(name)
