"""Redirect targets: same-origin absolute paths only, so no ``next`` can send a user away."""

from __future__ import annotations

from bridge.settings.values import local_path_or


def safe_next(value: str | None, default: str = "/") -> str:
    """Return ``value`` if it is a same-origin path, else ``default``.

    Refused: anything not starting with one '/', scheme-relative ``//host``, backslashes (which
    browsers read as '/'), control characters, and their percent-encoded forms.
    """
    return local_path_or(value, default)


def is_local_path(value: str) -> bool:
    """Whether ``value`` is a path on this site (``//host`` is not: a browser leaves for host)."""
    return safe_next(value, "") == value
