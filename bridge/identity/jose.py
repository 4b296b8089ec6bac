"""Every use of joserfc in the bridge: signed tokens (JWS, JWT), key sets (JWK) and the
Next.js session cookies' encryption (JWE).

Which key verifies which algorithm is one explicit table, :data:`KEY_TYPES`: an algorithm is
only ever checked with a key of its own type and curve, so ``EdDSA`` takes an Ed25519 key (not
Ed448, which joserfc's ``EdDSA`` would also take) and ``ES512`` a P-521 one. The algorithms
``[login.jwt]`` accepts are declared by the settings (the bottom layer, which imports nothing
from here); each has a row in the table, which a test holds.

A token is read defensively before any library parses it: its length and its header's size are
capped, each header field read is type-checked, and JSON nested beyond Python's stack is a
malformed token like any other. Whatever is wrong with a token is a
:class:`~bridge.errors.TokenRejected` whose ``reason`` is one of ``malformed``,
``alg_not_allowed``, ``unknown_kid``, ``bad_signature`` or ``claims:<name>``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, get_args

from joserfc import jwe, jws, jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import Key, KeySet, OctKey

from bridge.errors import TokenRejected
from bridge.identity import Claims
from bridge.settings.schema import PublicKeyAlgorithm

MAX_JWT_LENGTH = 16 * 1024
# A protected header names an algorithm, a key id and a type: a few dozen bytes. 1 KB is
# generous and keeps hostile JSON (deep nesting, huge numbers) away from the parser.
MAX_HEADER_BYTES = 1024
_MAX_HEADER_SEGMENT = (MAX_HEADER_BYTES * 4 + 2) // 3  # its unpadded base64 length
# JSON errors a parser raises on hostile input: RecursionError for nesting beyond the stack.
_JSON_ERRORS = (ValueError, TypeError, UnicodeError, RecursionError)


@dataclass(frozen=True, slots=True)
class KeyType:
    """The JWK an algorithm is verified with: its ``kty`` and, where it has one, ``crv``."""

    kty: str
    crv: str | None = None

    def fits(self, key: Key) -> bool:
        return key.key_type == self.kty and (self.crv is None or key.get("crv") == self.crv)


_RSA = KeyType("RSA")
_ED25519 = KeyType("OKP", "Ed25519")
KEY_TYPES: Mapping[str, KeyType] = MappingProxyType(
    {
        "RS256": _RSA, "RS384": _RSA, "RS512": _RSA,
        "PS256": _RSA, "PS384": _RSA, "PS512": _RSA,
        "ES256": KeyType("EC", "P-256"),
        "ES384": KeyType("EC", "P-384"),
        "ES512": KeyType("EC", "P-521"),
        # RFC 8037's name, which providers publish, and RFC 9864's for the same Ed25519 keys.
        "EdDSA": _ED25519,
        "Ed25519": _ED25519,
    }
)  # fmt: skip
# What [login.jwt] may be configured with (declared by the settings).
SETTINGS_ALGORITHMS: tuple[str, ...] = get_args(PublicKeyAlgorithm)
# What an OpenID provider's tokens may be signed with: asymmetric only (an HS* token would be
# keyed with the client secret), never "none".
OIDC_ALGORITHMS: tuple[str, ...] = tuple(KEY_TYPES)


def is_eddsa(alg: str) -> bool:
    return KEY_TYPES.get(alg) is _ED25519


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of a token's protected header the bridge reads, each of its declared type."""

    alg: str
    kid: str | None
    typ: str | None


def read_header(token: object) -> Header:
    """Return the protected header of a compact JWS, checked for size and field types."""
    if not isinstance(token, str) or len(token) > MAX_JWT_LENGTH or token.count(".") != 2:
        raise TokenRejected("malformed")
    if len(token.partition(".")[0]) > _MAX_HEADER_SEGMENT:
        raise TokenRejected("malformed")
    try:
        fields = dict(jws.extract_compact(token.encode("ascii")).headers())
    except (JoseError, *_JSON_ERRORS) as exc:
        raise TokenRejected("malformed") from exc
    alg, kid, typ = fields.get("alg"), fields.get("kid"), fields.get("typ")
    if not isinstance(alg, str):
        raise TokenRejected("malformed")
    if not (kid is None or isinstance(kid, str)) or not (typ is None or isinstance(typ, str)):
        raise TokenRejected("malformed")
    return Header(alg=alg, kid=kid, typ=typ)


def pick_key(key_set: KeySet, kid: str | None, alg: str) -> Key | None:
    """Return the one signing key of ``alg``'s type (and ``kid``, if given), else None."""
    key_type = KEY_TYPES.get(alg)
    if key_type is None:
        return None
    candidates = [
        key
        for key in key_set.keys
        if key_type.fits(key) and key.get("use") in (None, "sig") and key.get("alg") in (None, alg)
    ]
    if kid is not None:
        candidates = [key for key in candidates if key.kid == kid]
    # Without a kid, only an unambiguous key will do.
    return candidates[0] if len(candidates) == 1 else None


async def verify(
    token: object,
    algorithms: Collection[str],
    keys: Callable[[bool], Awaitable[KeySet]],
) -> tuple[Header, Claims]:
    """Verify a signed JWT; return its header and claims (the claims' values are not checked).

    ``keys(False)`` is the cached key set, ``keys(True)`` a refetched one (the caller throttles
    it): a key the cached set lacks is how providers announce a rotation.
    """
    header = read_header(token)
    assert isinstance(token, str)  # read_header refuses anything else
    if header.alg not in algorithms or header.alg not in KEY_TYPES:
        raise TokenRejected("alg_not_allowed")  # "none", HS256 and anything not configured
    key = pick_key(await keys(False), header.kid, header.alg)
    if key is None:
        key = pick_key(await keys(True), header.kid, header.alg)
    if key is None:
        raise TokenRejected("unknown_kid")
    try:
        with warnings.catch_warnings():
            # joserfc warns that RFC 9864 deprecates the name "EdDSA" (for "Ed25519"), yet it
            # is the name providers publish; the key picked is an Ed25519 key either way.
            warnings.simplefilter("ignore", SecurityWarning)
            decoded = jwt.decode(token, key, algorithms=[header.alg])
    except JoseError as exc:
        raise TokenRejected("bad_signature") from exc
    except _JSON_ERRORS as exc:  # claims that are not JSON, or nested beyond the stack
        raise TokenRejected("malformed") from exc
    return header, dict(decoded.claims)


def check_claims(claims: Mapping[str, Any], *, now: int, leeway: int, **options: Any) -> None:
    """Check a token's registered claims (``exp``, ``nbf``, and the ``options`` named, as
    joserfc's ``ClaimsOption``); a failure is ``claims:<name>``."""
    registry = jwt.JWTClaimsRegistry(now=lambda: now, leeway=leeway, **options)
    try:
        registry.validate(dict(claims))
    except JoseError as exc:
        raise TokenRejected(f"claims:{getattr(exc, 'claim', '') or type(exc).__name__}") from exc
    except _JSON_ERRORS as exc:  # a claim of a type joserfc does not expect
        raise TokenRejected("claims:malformed") from exc


def unverified_claims(token: str) -> Claims | None:
    """Read a JWS's claims WITHOUT verifying them (only to choose whose keys will verify it)."""
    if len(token) > MAX_JWT_LENGTH or len(token.partition(".")[0]) > _MAX_HEADER_SEGMENT:
        return None
    try:
        claims = json.loads(jws.extract_compact(token.encode("ascii")).payload)
    except (JoseError, *_JSON_ERRORS):
        return None
    return claims if isinstance(claims, dict) else None


def import_key_set(data: object) -> KeySet:
    """Import a JWKS document; anything that is not one raises ValueError."""
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWKS")
    try:
        return KeySet.import_key_set(dict(data))  # type: ignore[arg-type]
    except (JoseError, KeyError, *_JSON_ERRORS) as exc:
        raise ValueError("not a JWKS") from exc


# --- JWE (the Next.js session cookies) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirectKey:
    """A symmetric key for ``dir`` JWE decryption (one per secret and content encryption)."""

    key: OctKey

    @classmethod
    def of(cls, raw: bytes) -> DirectKey:
        return cls(OctKey.import_key(raw))


def decrypt_direct(token: str, key: DirectKey, algorithms: Collection[str]) -> bytes | None:
    """Decrypt a ``dir`` compact JWE with ``key``; None if it is not ours or not intact."""
    registry = jwe.JWERegistry(algorithms=list(algorithms))
    try:
        plaintext = jwe.decrypt_compact(token, key.key, registry=registry).plaintext
    except (JoseError, *_JSON_ERRORS):
        return None
    return plaintext


__all__ = [
    "KEY_TYPES", "MAX_HEADER_BYTES", "MAX_JWT_LENGTH", "OIDC_ALGORITHMS", "SETTINGS_ALGORITHMS",
    "DirectKey", "Header", "KeySet", "KeyType", "check_claims", "decrypt_direct",
    "import_key_set", "is_eddsa", "pick_key", "read_header", "unverified_claims", "verify",
]  # fmt: skip
