"""Token validation: ID tokens and back-channel logout tokens, against the provider's keys
(joserfc). Everything that goes wrong with a token is a :class:`TokenRejected` with a short
reason for the log; the routes turn it into a fixed 400 answer, so nothing from the token
reaches the client."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from authlib.oidc.core.util import create_half_hash

from bridge.errors import (
    TokenRejected,
)
from bridge.identity import Claims, jose
from bridge.identity.oidc.documents import ProviderDocuments

MAX_JWT_LENGTH = jose.MAX_JWT_LENGTH  # the bound login.py puts on a posted logout token
LOGOUT_TOKEN_MAX_AGE = 300
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPES = ("logout+jwt", "application/logout+jwt", "jwt")
# Claims that describe the token rather than the person: not kept in the session's claims.
TOKEN_CLAIMS = frozenset(
    {"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "jti", "sid",
     "auth_time", "s_hash", "events", "typ"}
)  # fmt: skip
MAX_CLAIMS_BYTES = 8 * 1024


class TokenChecks(ProviderDocuments):
    """The checks of the tokens a provider signs."""

    async def verify_jwt(self, token: Any) -> tuple[jose.Header, Claims]:
        """Check a signed JWT against the provider's keys; return its header and claims."""
        jose.read_header(token)  # a malformed token fetches nothing
        algorithms = self.signing_algs(await self.metadata())
        return await jose.verify(token, algorithms, self._key_set)

    async def _key_set(self, refresh: bool) -> jose.KeySet:
        return await self.keys(refresh=refresh)

    def _check_claims(self, claims: Claims, **required: Any) -> None:
        """Check iss, aud (and azp), iat and the ``required`` claims of a token from us."""
        jose.check_claims(
            claims,
            now=int(self.clock()),
            leeway=self.settings.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.settings.client_id},
            iat={"essential": True},
            **required,
        )
        aud = claims.get("aud")
        azp = claims.get("azp")
        # OpenID Connect Core 3.1.3.7: with several audiences azp must name us; if present at all
        # it must be us.
        if isinstance(aud, list) and len(aud) > 1 and azp is None:
            raise TokenRejected("azp_missing")
        if azp is not None and azp != self.settings.client_id:
            raise TokenRejected("azp_mismatch")

    async def validate_id_token(
        self,
        id_token: Any,
        *,
        nonce: str | None,
        access_token: str | None = None,
        subject: str | None = None,
    ) -> Claims:
        """Validate an ID token (signature, iss, aud, azp, exp, iat, nonce); return its claims.

        ``nonce`` is required for a login; a refresh passes None and the ``subject`` it
        expects instead (OpenID Connect Core 12.2).
        """
        header, claims = await self.verify_jwt(id_token)
        self._check_claims(claims, exp={"essential": True}, sub={"essential": True})
        if nonce is not None:
            if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(
                claims["nonce"], nonce
            ):
                raise TokenRejected("nonce_mismatch")
        elif "nonce" in claims and subject is None:
            raise TokenRejected("nonce_unexpected")
        if subject is not None and claims.get("sub") != subject:
            raise TokenRejected("subject_changed")
        at_hash = claims.get("at_hash")
        if at_hash is not None and access_token is not None:
            expected = _half_hash(access_token, header.alg)
            if expected is None or not secrets.compare_digest(
                expected.decode("ascii"), str(at_hash)
            ):
                raise TokenRejected("at_hash_mismatch")
        return claims

    async def validate_logout_token(self, logout_token: Any) -> Claims:
        """Validate a back-channel logout token (OpenID Connect Back-Channel Logout 1.0, 2.6)."""
        header, claims = await self.verify_jwt(logout_token)
        if header.typ is not None and header.typ.lower() not in LOGOUT_TOKEN_TYPES:
            raise TokenRejected("typ_not_logout")
        # Back-Channel Logout 1.0, 2.4: exp is required, like iat and jti.
        self._check_claims(claims, exp={"essential": True}, jti={"essential": True})
        if claims["iat"] < self.clock() - LOGOUT_TOKEN_MAX_AGE - self.settings.leeway:
            raise TokenRejected("too_old")
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
            raise TokenRejected("events_missing")
        if "nonce" in claims:
            # A nonce marks an ID token: refusing it stops an ID token posing as a logout token.
            raise TokenRejected("nonce_present")
        sub, sid = claims.get("sub"), claims.get("sid")
        if sub is None and sid is None:
            raise TokenRejected("sub_and_sid_missing")
        for value in (sub, sid):
            if value is not None and (not isinstance(value, str) or not value or len(value) > 512):
                raise TokenRejected("malformed")
        return claims


def _half_hash(value: str, alg: str) -> bytes | None:
    """at_hash for ``alg`` (OpenID Connect Core 3.1.3.6); Ed25519 hashes with SHA-512."""
    if jose.is_eddsa(alg):
        digest = hashlib.sha512(value.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=")
    half: bytes | None = create_half_hash(value, alg)
    return half


def session_claims(claims: Mapping[str, Any]) -> Claims:
    """Keep the claims that describe the person (for access rules), within a size bound."""
    kept: Claims = {}
    size = 0
    for key, value in claims.items():
        if key in TOKEN_CLAIMS or key == "sub":
            continue
        size += len(key) + len(repr(value))
        if size > MAX_CLAIMS_BYTES:
            break
        kept[key] = value
    return kept
