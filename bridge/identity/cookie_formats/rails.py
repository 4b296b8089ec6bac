"""Rails' encrypted cookie store, verified as ActiveSupport's ``MessageEncryptor`` does it.

The cookie is ``base64(ciphertext)--base64(iv)--base64(auth_tag)`` (AES-256-GCM, no additional
data), URL-escaped by Rack. The key is PBKDF2 of ``secret_key_base`` with the salt
``authenticated encrypted cookie``, 1000 iterations, 32 bytes, SHA-256 since Rails 7.0 and SHA-1
before (``key_digest``). The plaintext is the ``_rails`` metadata envelope, in one of two shapes:
``message`` holds the session's JSON in base64 (what the cookie jar writes in every Rails version,
since it hands MessageEncryptor a string already serialized by ``cookies_serializer``), or
``data`` holds the session itself (what MessageEncryptor writes from 7.1 when it serializes with
JSON, ``use_message_serializer_for_metadata``). Both carry ``pur``, which must be
``cookie.<name>``, and maybe ``exp`` (ISO 8601), which must be ahead. A message without the
envelope is refused: it names no purpose.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from bridge.identity.cookie_formats import MAX_COOKIE_LENGTH
from bridge.settings.schema import RailsCookie

SALT = b"authenticated encrypted cookie"
ITERATIONS = 1000
_DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha1": hashes.SHA1,
}


def derive_key(secret_key_base: str, digest: str) -> bytes:
    """``ActiveSupport::KeyGenerator#generate_key(SALT, 32)`` for one secret_key_base."""
    kdf = PBKDF2HMAC(algorithm=_DIGESTS[digest](), length=32, salt=SALT, iterations=ITERATIONS)
    return kdf.derive(secret_key_base.encode("utf-8"))


class RailsSession:
    def __init__(self, settings: RailsCookie, clock: Callable[[], float]) -> None:
        self.name = settings.name
        self.purpose = f"cookie.{settings.name}"
        self.clock = clock
        # Newest first, as Rails tries its cookie rotations after the current key.
        self.ciphers = [
            AESGCM(derive_key(key.reveal(), settings.key_digest)) for key in settings.secret_keys
        ]

    async def read(self, cookies: Mapping[str, str]) -> Mapping[str, Any] | None:
        value = cookies.get(self.name)
        if not value or len(value) > MAX_COOKIE_LENGTH:
            return None
        parts = unquote_plus(value).split("--")  # Rack unescapes cookie values
        if len(parts) != 3:
            return None
        try:
            ciphertext, iv, tag = (base64.b64decode(part, validate=True) for part in parts)
        except (binascii.Error, ValueError):
            return None
        if len(tag) != 16 or not iv:
            return None
        for cipher in self.ciphers:
            try:
                plaintext = cipher.decrypt(iv, ciphertext + tag, None)
            except (InvalidTag, ValueError):
                continue
            return self._unwrap(plaintext)
        return None

    def _unwrap(self, plaintext: bytes) -> Mapping[str, Any] | None:
        try:
            envelope = json.loads(plaintext)
            meta = envelope["_rails"]
            if not isinstance(meta, dict) or meta.get("pur") != self.purpose:
                return None
            expires = meta.get("exp")
            if expires is not None and not self._fresh(expires):
                return None
            if "data" in meta:  # MessageEncryptor 7.1+ serializing the value itself
                session = meta["data"]
                if isinstance(session, str):  # a jar's JSON string, serialized once more
                    session = json.loads(session)
            else:  # the session's own JSON, base64 inside the envelope
                session = json.loads(base64.b64decode(meta["message"], validate=True))
        # RecursionError: JSON nested beyond Python's stack
        except (ValueError, TypeError, KeyError, binascii.Error, RecursionError):
            return None
        return session if isinstance(session, dict) else None

    def _fresh(self, expires: Any) -> bool:
        if not isinstance(expires, str):
            return False
        when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        if when.tzinfo is None:
            return False
        return self.clock() < when.timestamp()

    async def aclose(self) -> None:
        return None
