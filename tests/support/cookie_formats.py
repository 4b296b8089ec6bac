"""Mint other frameworks' session values with those frameworks' own libraries.

Node's (@auth/core, next-auth, react-router) and Ruby's (ActiveSupport) minters run as
subprocesses from tests/cookie_formats/, which scripts/test.sh installs; Django runs in-process.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent / "cookie_formats"


def node_mint(*jobs: dict[str, Any]) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["node", str(HERE / "mint.mjs"), json.dumps(list(jobs))],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


def rails_mint(*jobs: dict[str, Any]) -> list[str]:
    out = subprocess.run(
        ["ruby", str(HERE / "rails_mint.rb")],
        input=json.dumps(list(jobs)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[str] = json.loads(out.stdout)
    return result


def django_cookie(session: dict[str, Any], key: str, fallbacks: tuple[str, ...] = ()) -> str:
    """Save ``session`` with Django's signed_cookies backend; return the cookie value."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY="unused-" + "x" * 40,
            SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
            INSTALLED_APPS=["django.contrib.sessions"],
            USE_TZ=True,
        )
        django.setup()
    from django.contrib.sessions.backends.signed_cookies import SessionStore
    from django.test import override_settings

    with override_settings(SECRET_KEY=key, SECRET_KEY_FALLBACKS=list(fallbacks)):
        store = SessionStore()
        store.update(session)
        store.save()
        return str(store.session_key)


def django_version() -> str:
    import django

    return django.get_version()
