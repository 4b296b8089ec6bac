"""Kettle & Leaf, Django edition: a one-file Django shop whose login is Django's own
``django.contrib.auth`` with the ``signed_cookies`` session backend. It knows nothing about the
bridge; the bridge verifies the same ``sessionid`` cookie with the same ``SECRET_KEY``.

Run it with ``python -m examples.django_site`` (see README.md).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

USERS = {
    "alice": {"email": "alice@example.com", "groups": ["customers"]},
    "bob": {"email": "bob@example.com", "groups": []},
}
PASSWORD = "demo-password"  # noqa: S105 - the demo accounts, as in the README


def configure() -> None:
    """Configure Django from the environment (SITE_SECRET_KEY: newest key first)."""
    keys = [k.strip() for k in os.environ.get("SITE_SECRET_KEY", "").split(",") if k.strip()]
    if not keys or any(len(k) < 32 for k in keys):
        raise SystemExit(
            "SITE_SECRET_KEY: set it to a key of 32+ characters (a list, newest first)"
        )
    trusted = [o for o in os.environ.get("SHOP_TRUSTED_NEXT_ORIGINS", "").split(",") if o]
    database = Path(tempfile.gettempdir()) / f"kettle-and-leaf-django-{os.getpid()}.sqlite3"
    settings.configure(
        DEBUG=False,
        SECRET_KEY=keys[0],
        SECRET_KEY_FALLBACKS=keys[1:],  # older keys still verify; the first one signs
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        # The session is the signed cookie itself: nothing for the bridge to look up.
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        SESSION_COOKIE_AGE=1209600,  # Django's default, two weeks: the bridge's max_age
        SESSION_COOKIE_SECURE=os.environ.get("SHOP_COOKIE_SECURE") == "1",
        SESSION_COOKIE_SAMESITE="Lax",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}},
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        USE_TZ=True,
        SHOP_TRUSTED_NEXT_HOSTS={urlsplit(o).netloc for o in trusted},
    )


def page(request: Any, body: str, status: int = 200) -> Any:
    from django.http import HttpResponse
    from django.template import engines

    template = engines["django"].from_string(
        "<!doctype html><meta charset='utf-8'><title>Kettle &amp; Leaf</title><body>"
        + body
        + "</body>"
    )
    return HttpResponse(template.render({"request": request}, request), status=status)


def home(request: Any) -> Any:
    if request.user.is_authenticated:
        return page(
            request,
            "<p>Signed in as {{ request.user.username }}.</p>"
            "<form method='post' action='/logout'>{% csrf_token %}<button>Sign out</button></form>",
        )
    return page(request, "<p>Signed out. <a href='/login'>Sign in</a></p>")


def _safe_next(request: Any, value: str | None) -> str:
    from django.utils.http import url_has_allowed_host_and_scheme

    allowed = {request.get_host(), *settings.SHOP_TRUSTED_NEXT_HOSTS}
    if value and url_has_allowed_host_and_scheme(value, allowed_hosts=allowed):
        return value
    return "/"


def login_view(request: Any) -> Any:
    from django.contrib.auth import authenticate, login
    from django.shortcuts import redirect

    if request.method == "POST":
        user = authenticate(
            request, username=request.POST.get("username"), password=request.POST.get("password")
        )
        if user is None:
            return page(request, "<p>Wrong user or password.</p>", status=401)
        login(request, user)  # a new session: _auth_user_id, _auth_user_backend, _auth_user_hash
        # What the bridge's access rules read, beside Django's own keys.
        request.session["email"] = user.email
        request.session["groups"] = [g.name for g in user.groups.all()]
        return redirect(_safe_next(request, request.POST.get("next")))
    return page(
        request,
        "<form method='post' action='/login'>{% csrf_token %}"
        "<input type='hidden' name='next' value='{{ request.GET.next }}'>"
        "<label>User <input name='username'></label> "
        "<label>Password <input name='password' type='password'></label>"
        "<button>Sign in</button></form>",
    )


def logout_view(request: Any) -> Any:
    from django.contrib.auth import logout
    from django.shortcuts import redirect
    from django.views.decorators.http import require_POST

    @require_POST
    def view(request: Any) -> Any:
        logout(request)  # flushes the session: the cookie is deleted
        return redirect("/")

    return view(request)


def _urls() -> list[Any]:
    from django.urls import path

    return [path("", home), path("login", login_view), path("logout", logout_view)]


def create_demo_users() -> None:
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    customers, _ = Group.objects.get_or_create(name="customers")
    for username, info in USERS.items():
        if User.objects.filter(username=username).exists():
            continue
        user = User.objects.create_user(username, info["email"], PASSWORD)
        if "customers" in info["groups"]:
            user.groups.add(customers)


def __getattr__(name: str) -> Any:
    # ROOT_URLCONF is this module; Django reads urlpatterns after setup.
    if name == "urlpatterns":
        return _urls()
    raise AttributeError(name)
