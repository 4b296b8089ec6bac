"""The embedded demo: a stand-in "existing site" login, the bridge and a stand-in Sentifyd in
one process, so a first look needs no configuration and no secrets."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import TypedDict

import httpx
from quart import Blueprint, Quart, Response, current_app, redirect, render_template, request

from bridge.app import create_app
from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.identity.site_cookie import SiteCookieSource
from bridge.settings.loader import load_settings
from bridge.settings.schema import Settings
from bridge.web.origin import check_same_origin
from bridge.web.redirects import safe_next
from bridge.wiring import Bridge

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.toml"
DEMO_TOKEN_TTL = 30  # short, so the demo shows a refresh within a minute
CSRF_COOKIE = "demo_csrf"


class DemoUser(TypedDict):
    """A demo user: the claims the demo site's login puts in its cookie, and a line on why."""

    name: str
    email: str
    groups: list[str]
    email_verified: bool
    description: str


USERS: dict[str, DemoUser] = {
    "alice": {
        "name": "Alice Martin",
        "email": "alice@example.com",
        "groups": ["customers"],
        "email_verified": True,
        "description": "A customer: may talk to the avatar.",
    },
    "bob": {
        "name": "Bob Stone",
        "email": "bob@example.org",
        "groups": [],
        "email_verified": True,
        "description": "Signed in, but not a customer: refused (403).",
    },
}


# The demo's operator, for its console at /admin/: a token made for this run only.
DEMO_OPERATOR = "demo-operator"


def demo_settings(
    port: int = 8000,
    host: str = "127.0.0.1",
    config: Path = DEMO_CONFIG,
    operator_token: str | None = None,
) -> tuple[Settings, str]:
    """Load the demo config with freshly generated secrets; return settings and the API key."""
    api_key = "demo-" + secrets.token_urlsafe(24)
    env = {
        "BRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
        "AVATAR_API_KEY": api_key,
        "SITE_SECRET_KEY": secrets.token_urlsafe(32),
        "BRIDGE_ADMIN_TOKENS": f"{DEMO_OPERATOR}:{operator_token or secrets.token_urlsafe(32)}",
    }
    overrides = {"server": {"host": host, "port": port, "public_url": f"http://{host}:{port}"}}
    return load_settings(config, env, overrides=overrides), api_key


def create_demo_app(
    port: int = 8000, host: str = "127.0.0.1", token_ttl: int = DEMO_TOKEN_TTL
) -> Quart:
    operator_token = secrets.token_urlsafe(32)
    settings, api_key = demo_settings(port, host, operator_token=operator_token)
    fake = create_fake_sentifyd(
        {api_key: settings.avatars[0].avatar_id}, token_ttl=token_ttl, control=False
    )
    app = create_app(settings, sentifyd_transport=httpx.ASGITransport(app=fake))  # type: ignore[arg-type]
    app.extensions["fake_sentifyd"] = fake.extensions["fake_sentifyd"]
    # For the terminal that started the demo (cli.cmd_demo prints it), never for a page.
    app.extensions["demo_operator_token"] = operator_token
    app.register_blueprint(site)
    return app


site = Blueprint("demo_site", __name__, url_prefix="/demo")


def _site_cookie() -> SiteCookieSource:
    bridge = Bridge.of(current_app)
    assert bridge.settings.site_cookie is not None
    return SiteCookieSource(bridge.settings.site_cookie)


@site.get("/login")
async def login_form() -> Response:
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)
    users = [
        {"username": u, "name": d["name"], "description": d["description"]}
        for u, d in USERS.items()
    ]
    body = await render_template(
        "demo_login.html",
        next=safe_next(request.args.get("next")),
        csrf=token,
        users=users,
        error=None,
        title="Sign in to Demo Shop",
    )
    response = Response(body, content_type="text/html; charset=utf-8")
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/demo")
    return response


@site.post("/login")
async def login() -> Response:
    check_same_origin(request, Bridge.of(current_app).settings.server)
    form = await request.form
    expected = request.cookies.get(CSRF_COOKIE, "")
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, so a 500).
    given = form.get("csrf", "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        return Response("Refused: the form is stale; go back and try again.", status=400)
    user = USERS.get(form.get("username", ""))
    if user is None:
        return Response("Unknown demo user.", status=400)
    payload = {
        "user_id": form["username"],
        "name": user["name"],
        "email": user["email"],
        "groups": user["groups"],
        "email_verified": user["email_verified"],
    }
    # Exactly what the site's own login would do: a Flask-signed session cookie.
    cookie = _site_cookie().serializer.dumps(payload)
    response: Response = redirect(safe_next(form.get("next")), 303)  # type: ignore[assignment]
    bridge = Bridge.of(current_app)
    assert bridge.settings.site_cookie is not None
    response.set_cookie(
        bridge.settings.site_cookie.name, str(cookie), httponly=True, samesite="Lax", path="/"
    )
    return response


@site.post("/logout")
async def logout() -> Response:
    bridge = Bridge.of(current_app)
    check_same_origin(request, bridge.settings.server)
    assert bridge.settings.site_cookie is not None
    response: Response = redirect("/demo/login", 303)  # type: ignore[assignment]
    response.delete_cookie(bridge.settings.site_cookie.name, path="/")
    return response
