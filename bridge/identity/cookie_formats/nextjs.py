"""Next.js session cookies: Auth.js v5 (``@auth/core``) and NextAuth v4, both JWE.

Auth.js: ``dir`` + ``A256CBC-HS512`` (``A256GCM`` also accepted on decode, as Auth.js does), a
64-byte key by HKDF-SHA256 from ``AUTH_SECRET`` with the cookie name as salt and the info
``Auth.js Generated Encryption Key (<salt>)``; the header's ``kid`` is the key's JWK thumbprint.
NextAuth v4: ``dir`` + ``A256GCM``, a 32-byte key by HKDF-SHA256 from ``NEXTAUTH_SECRET`` with
an empty salt and the info ``NextAuth.js Generated Encryption Key``. Both honour ``exp`` and
``nbf`` with 15 seconds of tolerance, and split a long cookie into ``<name>.0``, ``<name>.1``...
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bridge.errors import TokenRejected
from bridge.identity import jose
from bridge.settings.schema import AuthJSCookie

CLOCK_TOLERANCE = 15  # jwtDecrypt's clockTolerance in both libraries
MAX_CHUNKS = 8
MAX_TOKEN_LENGTH = 8 * 4096
_ENC_KEY_LENGTH = {"A256CBC-HS512": 64, "A256GCM": 32}
# Auth.js writes {"alg":"dir","enc":...,"kid":...}: a hundred-odd bytes. Anything much larger is
# not its header, and is not parsed (hostile JSON: deep nesting, huge numbers).
_MAX_HEADER_SEGMENT = (jose.MAX_HEADER_BYTES * 4 + 2) // 3


def hkdf(secret: str, salt: str, info: str, length: int) -> bytes:
    """``@panva/hkdf``'s ``hkdf("sha256", secret, salt, info, length)``."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=salt.encode(), info=info.encode()
    ).derive(secret.encode("utf-8"))


def authjs_key(secret: str, salt: str, enc: str = "A256CBC-HS512") -> bytes:
    length = _ENC_KEY_LENGTH[enc]
    return hkdf(secret, salt, f"Auth.js Generated Encryption Key ({salt})", length)


def next_auth_v4_key(secret: str) -> bytes:
    return hkdf(secret, "", "NextAuth.js Generated Encryption Key", 32)


def _thumbprint(raw: bytes) -> str:
    # RFC 7638 with the digest Auth.js picks by key size (sha512 for its 64-byte key).
    k = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    digest = hashlib.new(
        f"sha{len(raw) * 8}", json.dumps({"k": k, "kty": "oct"}, separators=(",", ":")).encode()
    )
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _protected_header(token: str) -> dict[str, object] | None:
    """The JWE's protected header: a JSON object from the browser, its fields checked by use."""
    segments = token.split(".")
    if len(segments) != 5 or len(segments[0]) > _MAX_HEADER_SEGMENT:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(segments[0] + "=" * (-len(segments[0]) % 4)))
    except (ValueError, UnicodeError, RecursionError):  # RecursionError: nested beyond the stack
        return None
    return header if isinstance(header, dict) else None


def joined_chunks(cookies: Mapping[str, str], name: str) -> str | None:
    """Return the cookie ``name``, or its chunks ``name.0``, ``name.1``... joined in order."""
    if f"{name}.0" not in cookies:
        return cookies.get(name) or None
    parts = []
    for index in range(MAX_CHUNKS + 1):
        part = cookies.get(f"{name}.{index}")
        if part is None:
            break
        parts.append(part)
    if len(parts) > MAX_CHUNKS:
        return None
    return "".join(parts)


class NextJSSession:
    def __init__(self, settings: AuthJSCookie, clock: Callable[[], float]) -> None:
        self.name = settings.name
        self.clock = clock
        # Per content encryption: each secret's key (newest first) and its thumbprint, which
        # Auth.js puts in the header as the kid.
        self.keys: dict[str, list[tuple[jose.DirectKey, str]]] = {}
        if settings.format == "authjs":
            for enc in _ENC_KEY_LENGTH:
                keys = [authjs_key(s.reveal(), self.name, enc) for s in settings.secret_keys]
                self.keys[enc] = [(jose.DirectKey.of(k), _thumbprint(k)) for k in keys]
        else:
            keys = [next_auth_v4_key(s.reveal()) for s in settings.secret_keys]
            self.keys["A256GCM"] = [(jose.DirectKey.of(k), _thumbprint(k)) for k in keys]
        self.algorithms = ("dir", *self.keys)

    async def read(self, cookies: Mapping[str, str]) -> Mapping[str, Any] | None:
        token = joined_chunks(cookies, self.name)
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        token = unquote(token)
        header = _protected_header(token)
        if header is None:
            return None
        # Each field read is of the type Auth.js writes, or the value is not its cookie.
        enc, kid = header.get("enc"), header.get("kid")
        if header.get("alg") != "dir" or not isinstance(enc, str) or enc not in self.keys:
            return None
        if kid is not None and not isinstance(kid, str):
            return None
        for key, thumbprint in self.keys[enc]:
            if kid is not None and kid != thumbprint:
                continue
            plaintext = jose.decrypt_direct(token, key, self.algorithms)
            if plaintext is not None:
                return self._claims(plaintext)
        return None

    def _claims(self, plaintext: bytes) -> Mapping[str, Any] | None:
        try:
            payload = json.loads(plaintext)
            if not isinstance(payload, dict):
                return None
            jose.check_claims(payload, now=int(self.clock()), leeway=CLOCK_TOLERANCE)
        except (TokenRejected, ValueError, UnicodeError, RecursionError):
            return None
        return payload

    async def aclose(self) -> None:
        return None
