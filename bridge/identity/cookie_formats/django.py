"""Django's ``signed_cookies`` session backend, verified as ``django.core.signing.loads`` does.

The value is ``<payload>:<timestamp>:<signature>``: the payload is URL-safe base64 of JSON
(zlib-compressed and prefixed with ``.`` when that is shorter), the timestamp base62 seconds,
the signature an HMAC-SHA256 keyed with ``sha256(salt + "signer" + SECRET_KEY)``, which is
itsdangerous's ``django-concat`` key derivation. ``SECRET_KEY_FALLBACKS`` are the older keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from itsdangerous import BadSignature, Signer

from bridge.identity.cookie_formats import MAX_COOKIE_LENGTH
from bridge.settings.schema import DjangoCookie

SALT = "django.contrib.sessions.backends.signed_cookies"
MAX_SESSION_BYTES = 64 * 1024  # what a 4 KB cookie may inflate to
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def b62_decode(text: str) -> int:
    """Decode Django's base62 timestamp (``django.core.signing.b62_decode``)."""
    if not text or text == "-" or len(text) > 16:
        raise ValueError("not a base62 timestamp")
    sign = -1 if text[0] == "-" else 1
    number = 0
    for char in text[1:] if sign < 0 else text:
        number = number * 62 + _BASE62.index(char)
    return sign * number


class DjangoSession:
    def __init__(self, settings: DjangoCookie, clock: Callable[[], float]) -> None:
        self.name = settings.name
        self.max_age = settings.max_age
        self.clock = clock
        # itsdangerous tries every key, newest last; settings list the newest first.
        self.signer = Signer(
            [key.reveal() for key in reversed(settings.secret_keys)],
            salt=SALT,
            sep=":",
            key_derivation="django-concat",
            digest_method=hashlib.sha256,
        )

    async def read(self, cookies: Mapping[str, str]) -> Mapping[str, Any] | None:
        value = cookies.get(self.name)
        if not value or len(value) > MAX_COOKIE_LENGTH:
            return None
        try:
            signed = self.signer.unsign(value).decode("ascii")
            payload, _, stamp = signed.rpartition(":")
            # TimestampSigner: older than max_age seconds is expired.
            if not payload or self.clock() - b62_decode(stamp) > self.max_age:
                return None
            data = _decode(payload)
            session = json.loads(data.decode("latin-1"))  # as Django's JSONSerializer
        # RecursionError: JSON nested beyond Python's stack
        except (BadSignature, ValueError, UnicodeError, binascii.Error, zlib.error, RecursionError):
            return None
        return session if isinstance(session, dict) else None

    async def aclose(self) -> None:
        return None


def _decode(payload: str) -> bytes:
    compressed = payload.startswith(".")
    raw = payload[1:] if compressed else payload
    data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    if not compressed:
        return data
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_SESSION_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError("session too large")
    return out
