"""Read the user id and the claims out of a verified session or token payload.

``user_field`` is a top-level key of the payload, or an RFC 6901 JSON pointer when it starts
with ``/`` (``/passport/user``). A value that is a list yields its first scalar, depth first, so
Devise's ``[[42], "salt"]`` gives ``42``. Ids are strings: numbers become their decimal text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.identity import Claims

MAX_SUBJECT_LENGTH = 256
_MISSING = object()


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """Split an RFC 6901 pointer into its unescaped reference tokens ("/a~1b/c" -> a/b, c)."""
    if not pointer.startswith("/"):
        raise ValueError("a JSON pointer starts with '/'")
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/"))


def _lookup(payload: Any, field: str) -> Any:
    if not field.startswith("/"):
        return payload.get(field, _MISSING) if isinstance(payload, Mapping) else _MISSING
    value = payload
    for part in parse_pointer(field):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and (part == "0" or part[0] != "0"):
            index = int(part)
            value = value[index] if index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _first_scalar(value: Any, depth: int = 0) -> Any:
    if isinstance(value, list) and depth < 8:
        for item in value:
            found = _first_scalar(item, depth + 1)
            if found is not _MISSING:
                return found
        return _MISSING
    if isinstance(value, Mapping | Sequence) and not isinstance(value, str):
        return _MISSING
    return value


def subject_of(payload: Mapping[str, Any], user_field: str) -> str | None:
    """Return the user id ``user_field`` names in ``payload`` as a string, or None."""
    user = _first_scalar(_lookup(payload, user_field))
    if isinstance(user, bool) or not isinstance(user, str | int):
        return None
    subject = str(user)
    if not subject or len(subject) > MAX_SUBJECT_LENGTH:
        return None
    return subject


def claims_of(payload: Mapping[str, Any], claim_fields: Sequence[str]) -> Claims:
    """Copy the top-level ``claim_fields`` that ``payload`` has."""
    return {f: payload[f] for f in claim_fields if f in payload}
