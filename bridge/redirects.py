"""Redirect targets: same-origin absolute paths only, so no ``next`` can send a user away."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

MAX_TARGET_LENGTH = 2048


def safe_next(value: str | None, default: str = "/") -> str:
    """Return ``value`` if it is a same-origin path, else ``default``.

    Refused: anything not starting with one '/', scheme-relative ``//host``, backslashes (which
    browsers read as '/'), control characters, and their percent-encoded forms.
    """
    if not value or len(value) > MAX_TARGET_LENGTH:
        return default
    for text in (value, unquote(value), unquote(unquote(value))):
        if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
            return default
        if "\\" in text or not text.startswith("/") or text.startswith("//"):
            return default
        parts = urlsplit(text)
        if parts.scheme or parts.netloc:
            return default
    return value


def is_local_path(value: str) -> bool:
    """Whether ``value`` is a path on this site (``//host`` is not: a browser leaves for host)."""
    return safe_next(value, "") == value
