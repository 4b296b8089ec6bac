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
from collections.abc import Iterable, Iterator, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bridge.secret import Secret, token_bytes
from bridge.store.base import JSONObject

_SESSION_INFO = b"sentifyd-bridge/session-tokens/v1"
_HANDLE_INFO = b"sentifyd-bridge/handle-grace/v1"
_ZERO_SALT = bytes(32)  # HKDF's salt when none is given: HashLen zero bytes


def digest(value: str) -> str:
    """Return the SHA-256 hex digest under which a handle or id is stored."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _extractor(salt: bytes) -> hmac.HMAC:
    """HKDF-Extract under ``salt``, to be copied for each derivation: the salt's pads are
    hashed once instead of for every request."""
    return hmac.new(salt or _ZERO_SALT, digestmod=hashlib.sha256)


def _derive_with(extract: hmac.HMAC, material: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of one 32-byte block: two HMACs, written out because building
    the library's HKDF object cost more than the sealing it keys (``test_sealing`` checks the
    two agree).

    Through ``hmac.new`` and ``copy``, not ``hmac.digest``: in CPython 3.11 the one-shot
    ``hmac.digest`` lets go of the GIL for every call, however short its input, and under a
    server whose own thread waits for the GIL (granian's) each of those let it in mid-request:
    four per token request (README, "Performance").
    """
    prk = extract.copy()
    prk.update(material)
    return hmac.new(prk.digest(), info + b"\x01", hashlib.sha256).digest()


_HANDLE_EXTRACT = _extractor(b"")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM under ``key``: a fresh nonce, then the ciphertext and its tag."""
    nonce = token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(keys: Iterable[bytes], sealed: bytes, aad: bytes) -> bytes | None:
    """Open what :func:`_seal` sealed under any of ``keys``; None if none of them did."""
    if len(sealed) < 12 + 16:
        return None
    for key in keys:
        try:
            return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)
        except InvalidTag:
            continue
    return None


def _open_text(keys: Iterable[bytes], sealed: str, aad: bytes) -> bytes | None:
    try:
        raw = _unb64(sealed)
    except (ValueError, TypeError):
        return None
    return _open(keys, raw, aad)


class SessionSealer:
    """Seal and open a session's token blob; keys are tried newest first, for rotation.

    A session's key is derived (HKDF, two HMACs: about 3.5 us) for each seal and open, from the
    cookie value the request brought; nothing derived is kept between requests. A cache of
    derived keys (4,096 sessions) was measured: it saved that 3.5 us, 1-2% of a token
    request's CPU in the app, and cost about 330 bytes per cached session, a tenth of an idle
    session's whole memory (bench/memory.py).
    """

    def __init__(self, secret_keys: Sequence[Secret]) -> None:
        self._extractors = [_extractor(key.reveal().encode("utf-8")) for key in secret_keys]

    def _session_keys(self, cookie_token: str) -> Iterator[bytes]:
        """The session's keys, newest first, each derived only when the one before failed."""
        material = cookie_token.encode("ascii")
        for extract in self._extractors:
            yield _derive_with(extract, material, _SESSION_INFO)

    def seal_raw(self, cookie_token: str, session_id: str, plaintext: bytes) -> bytes:
        """Return ``plaintext`` sealed for this session: nonce, ciphertext and tag."""
        key = next(self._session_keys(cookie_token))
        return _seal(key, plaintext, session_id.encode())

    def open_raw(self, cookie_token: str, session_id: str, sealed: bytes) -> bytes | None:
        """Return what :meth:`seal_raw` sealed, or None if it was not sealed for this session."""
        return _open(self._session_keys(cookie_token), sealed, session_id.encode())

    def seal_bytes(self, cookie_token: str, session_id: str, plaintext: bytes) -> str:
        return _b64(self.seal_raw(cookie_token, session_id, plaintext))

    def open_bytes(self, cookie_token: str, session_id: str, sealed: str) -> bytes | None:
        keys = self._session_keys(cookie_token)
        return _open_text(keys, sealed, session_id.encode())

    def seal(self, cookie_token: str, session_id: str, value: JSONObject) -> str:
        """Seal a JSON object of any shape; :meth:`open` gives it back for its reader to check."""
        plain = json.dumps(value, separators=(",", ":")).encode()
        return self.seal_bytes(cookie_token, session_id, plain)

    def open(self, cookie_token: str, session_id: str, sealed: str) -> JSONObject | None:
        plain = self.open_bytes(cookie_token, session_id, sealed)
        if plain is None:
            return None
        value = json.loads(plain)
        return value if isinstance(value, dict) else None


def seal_with_handle(handle: str, value: str) -> str:
    key = _derive_with(_HANDLE_EXTRACT, handle.encode("ascii"), _HANDLE_INFO)
    return _b64(_seal(key, value.encode("utf-8"), b""))


def open_with_handle(handle: str, sealed: str) -> str | None:
    key = _derive_with(_HANDLE_EXTRACT, handle.encode("ascii"), _HANDLE_INFO)
    plain = _open_text([key], sealed, b"")
    return plain.decode("utf-8") if plain is not None else None
