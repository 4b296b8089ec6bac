"""Sealing (AEAD encryption) of what the store must hold but a store dump must not reveal.

Upstream tokens are sealed under a key derived from the session's cookie value, which lives
only in the visitor's browser, and from ``BRIDGE_SECRET_KEY``: a store dump alone, or the
bridge's key alone, opens nothing. Handles are kept as hashes; during the refresh grace window
the next handle is sealed under a key derived from the previous handle, so only its holder can
get the same answer again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bridge.secret import Secret

_SESSION_INFO = b"sentifyd-bridge/session-tokens/v1"
_HANDLE_INFO = b"sentifyd-bridge/handle-grace/v1"


def digest(value: str) -> str:
    """Return the SHA-256 hex digest under which a handle or id is stored."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _derive(material: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(material)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _seal(cipher: AESGCM, plaintext: bytes, aad: bytes) -> str:
    nonce = os.urandom(12)
    return _b64(nonce + cipher.encrypt(nonce, plaintext, aad))


def _open(ciphers: Iterable[AESGCM], sealed: str, aad: bytes) -> bytes | None:
    """Open ``sealed`` with the first of ``ciphers`` whose key it was sealed with."""
    try:
        raw = _unb64(sealed)
    except (ValueError, TypeError):
        return None
    if len(raw) < 12 + 16:
        return None
    for cipher in ciphers:
        try:
            return cipher.decrypt(raw[:12], raw[12:], aad)
        except InvalidTag:
            continue
    return None


class SessionSealer:
    """Seal and open a session's token blob; keys are tried newest first, for rotation.

    Deriving a session's keys (HKDF) costs more than sealing itself, so the derived keys of
    the ``cache_size`` most recently used sessions are kept in this process (never in the
    store), each beside the cookie value it was derived from.
    """

    def __init__(self, secret_keys: Sequence[Secret], cache_size: int = 4096) -> None:
        self._salts = [key.reveal().encode("utf-8") for key in secret_keys]
        self._cache_size = cache_size
        # session id -> (the cookie value the keys are derived from, one cipher per salt)
        self._keys: OrderedDict[str, tuple[str, list[AESGCM]]] = OrderedDict()

    def _ciphers(self, cookie_token: str, session_id: str) -> list[AESGCM]:
        cached = self._keys.get(session_id)
        if cached is not None and hmac.compare_digest(cached[0], cookie_token):
            self._keys.move_to_end(session_id)
            return cached[1]
        material = cookie_token.encode("ascii")
        ciphers = [AESGCM(_derive(material, salt, _SESSION_INFO)) for salt in self._salts]
        self._keys[session_id] = (cookie_token, ciphers)
        if len(self._keys) > self._cache_size:
            self._keys.popitem(last=False)
        return ciphers

    def forget(self, session_id: str) -> None:
        """Drop an ended session's keys."""
        self._keys.pop(session_id, None)

    def seal_bytes(self, cookie_token: str, session_id: str, plaintext: bytes) -> str:
        cipher = self._ciphers(cookie_token, session_id)[0]
        return _seal(cipher, plaintext, session_id.encode())

    def open_bytes(self, cookie_token: str, session_id: str, sealed: str) -> bytes | None:
        return _open(self._ciphers(cookie_token, session_id), sealed, session_id.encode())

    def seal(self, cookie_token: str, session_id: str, value: dict[str, Any]) -> str:
        plain = json.dumps(value, separators=(",", ":")).encode()
        return self.seal_bytes(cookie_token, session_id, plain)

    def open(self, cookie_token: str, session_id: str, sealed: str) -> dict[str, Any] | None:
        plain = self.open_bytes(cookie_token, session_id, sealed)
        if plain is None:
            return None
        value = json.loads(plain)
        return value if isinstance(value, dict) else None


def seal_with_handle(handle: str, value: str) -> str:
    key = _derive(handle.encode("ascii"), b"", _HANDLE_INFO)
    return _seal(AESGCM(key), value.encode("utf-8"), b"")


def open_with_handle(handle: str, sealed: str) -> str | None:
    key = _derive(handle.encode("ascii"), b"", _HANDLE_INFO)
    plain = _open([AESGCM(key)], sealed, b"")
    return plain.decode("utf-8") if plain is not None else None
