"""Kettle & Leaf: a small, ordinary Flask shop, the kind of existing site the bridge sits next to.

The shop knows nothing about the bridge. Its login keeps the user in Flask's own signed session
cookie, and that cookie is what the bridge verifies (``[login.cookie]`` with ``format = "flask"``,
see ``bridge.toml`` beside this file). The one bridge-aware page is ``/support``, which embeds
the ``<sentifyd-bot>`` component and points it at the bridge's token endpoint.

Run it from the repository root (see README.md)::

    SITE_SECRET_KEY=... flask --app examples.flask_site.shop:create_app run --port 5000
"""

from __future__ import annotations

import functools
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

MIN_SECRET_KEY_LENGTH = 32
MAX_NEXT_LENGTH = 2048
DEFAULT_BRIDGE_URL = "http://127.0.0.1:8000"
DEFAULT_COMPONENT_SCRIPT = "https://frontend.sentifyd.io/sentifyd-bot/main.js"
DEFAULT_AVATAR_ID = "avtr_1234abcd"
DEMO_PASSWORD = "demo-password"  # noqa: S105 - the documented password of every demo account


@dataclass(frozen=True)
class Product:
    slug: str
    name: str
    blurb: str
    price_cents: int


@dataclass(frozen=True)
class User:
    user_id: str
    name: str
    email: str
    groups: tuple[str, ...]
    email_verified: bool
    password_hash: str


PRODUCTS = (
    Product("sencha", "Sencha green tea", "Grassy and bright. 100 g tin.", 1250),
    Product("assam", "Assam breakfast", "Malty, strong, takes milk well. 250 g bag.", 990),
    Product("kettle", "Gooseneck kettle", "1 litre, brushed steel, for a slow pour.", 5400),
    Product("cups", "Stoneware cups", "A set of four, glazed in sea green.", 3200),
)

blueprint = Blueprint("shop", __name__)


@functools.cache
def users() -> dict[str, User]:
    """Return the demo accounts, hashed once per process (the hash is slow on purpose)."""
    return {
        "alice": User(
            user_id="alice",
            name="Alice",
            email="alice@example.com",
            groups=("customers",),
            email_verified=True,
            password_hash=generate_password_hash(DEMO_PASSWORD),
        ),
        "bob": User(
            user_id="bob",
            name="Bob",
            email="bob@example.com",
            groups=(),
            email_verified=True,
            password_hash=generate_password_hash(DEMO_PASSWORD),
        ),
    }


@functools.cache
def _decoy_hash() -> str:
    return generate_password_hash(secrets.token_urlsafe(16))


def authenticate(username: str, password: str) -> User | None:
    """Return the user whose name and password these are, or None."""
    user = users().get(username.strip().lower())
    # Check a hash for unknown names too, so the response time does not tell which names exist.
    matches = check_password_hash(user.password_hash if user else _decoy_hash(), password)
    return user if user is not None and matches else None


def secret_keys(value: str) -> list[str]:
    """Split a comma-separated key list, newest first (as the bridge reads the same variable)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def origin_of(value: str) -> str:
    """Return ``scheme://host[:port]`` of an http(s) origin, or raise ValueError."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) origin: {value!r}")
    if parts.username is not None or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError(f"not a plain origin (scheme://host[:port]): {value!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def safe_next(target: str | None, trusted_origins: Iterable[str] = ()) -> str:
    """Return ``target`` if it is a path on this site or a URL on a trusted origin, else ``/``."""
    if not target or len(target) > MAX_NEXT_LENGTH:
        return "/"
    for text in (target, unquote(target)):
        # Browsers read a backslash as "/" and drop tabs and newlines: both can forge "//host".
        if "\\" in text or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
            return "/"
    if target.startswith("/"):
        return "/" if target.startswith("//") or unquote(target).startswith("//") else target
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
        return "/"
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    return target if origin in set(trusted_origins) else "/"


def csrf_token() -> str:
    """Return this browser's form token, creating it on first use."""
    token = session.get("csrf_token")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf_token"] = token
    return token


def check_csrf() -> None:
    """Refuse a form post that does not carry this browser's form token."""
    expected = session.get("csrf_token")
    sent = request.form.get("csrf_token", "")
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(400, description="This form has expired. Go back, reload the page and try again.")


def current_user() -> dict[str, Any] | None:
    if "user_id" not in session:
        return None
    return {"id": session["user_id"], "email": session.get("email", "")}


@blueprint.get("/")
def index() -> str:
    return render_template("index.html", products=PRODUCTS)


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int]:
    target = safe_next(request.values.get("next"), current_app.config["TRUSTED_NEXT_ORIGINS"])
    error = None
    status = 200
    if request.method == "POST":
        check_csrf()
        user = authenticate(request.form.get("username", ""), request.form.get("password", ""))
        if user is not None:
            # A fresh session at login: nothing from before the login carries over.
            session.clear()
            session.permanent = True
            session["user_id"] = user.user_id
            session["email"] = user.email
            session["groups"] = list(user.groups)
            session["email_verified"] = user.email_verified
            session["csrf_token"] = secrets.token_urlsafe(32)
            return redirect(target, 303)
        error = "That username and password do not match an account."
        status = 401
    return render_template("login.html", next=target, error=error), status


@blueprint.post("/logout")
def logout() -> Response:
    check_csrf()
    session.clear()
    return redirect(url_for("shop.index"), 303)


@blueprint.get("/support")
def support() -> Response | str:
    if current_user() is None:
        return redirect(url_for("shop.login", next=url_for("shop.support")))
    config = current_app.config
    return render_template(
        "support.html",
        bridge_url=config["BRIDGE_PUBLIC_URL"],
        token_endpoint=f"{config['BRIDGE_PUBLIC_URL']}/request_tokens",
        component_script=config["SENTIFYD_COMPONENT_SCRIPT"],
        avatar_id=config["AVATAR_ID"],
    )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def create_app(
    secret_key: str | None = None, *, trusted_next_origins: Iterable[str] | None = None
) -> Flask:
    """Create the shop; ``secret_key`` and ``trusted_next_origins`` override the environment.

    ``secret_key`` (or ``SITE_SECRET_KEY``) is a comma-separated list, newest first: the first
    key signs, the others are still accepted (Flask's ``SECRET_KEY_FALLBACKS``), for rotation.
    """
    keys = secret_keys(os.environ.get("SITE_SECRET_KEY", "") if secret_key is None else secret_key)
    if not keys:
        raise RuntimeError(
            "SITE_SECRET_KEY is not set: the shop will not sign its login cookie with a made-up key"
        )
    if any(len(key) < MIN_SECRET_KEY_LENGTH for key in keys):
        raise RuntimeError(
            f"SITE_SECRET_KEY: each key must be at least {MIN_SECRET_KEY_LENGTH} characters"
        )
    if trusted_next_origins is None:
        trusted_next_origins = os.environ.get("SHOP_TRUSTED_NEXT_ORIGINS", "").split(",")
    try:
        trusted = frozenset(origin_of(o) for o in trusted_next_origins if o.strip())
    except ValueError as exc:
        raise RuntimeError(f"SHOP_TRUSTED_NEXT_ORIGINS: {exc}") from exc

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=keys[0],
        SECRET_KEY_FALLBACKS=keys[1:],
        # Flask's defaults, written out because the bridge's [login.cookie] must match them:
        # name "session", salt "cookie-session", and a 31-day PERMANENT_SESSION_LIFETIME.
        SESSION_COOKIE_NAME="session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=_env_flag("SHOP_COOKIE_SECURE"),
        TRUSTED_NEXT_ORIGINS=trusted,
        BRIDGE_PUBLIC_URL=os.environ.get("BRIDGE_PUBLIC_URL", DEFAULT_BRIDGE_URL).rstrip("/"),
        SENTIFYD_COMPONENT_SCRIPT=os.environ.get(
            "SENTIFYD_COMPONENT_SCRIPT", DEFAULT_COMPONENT_SCRIPT
        ),
        AVATAR_ID=os.environ.get("AVATAR_ID", DEFAULT_AVATAR_ID),
    )
    app.register_blueprint(blueprint)

    @app.context_processor
    def page_context() -> dict[str, Any]:
        return {"user": current_user(), "csrf_token": csrf_token}

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app
