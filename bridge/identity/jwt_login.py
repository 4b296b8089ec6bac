"""A site whose login is a JWT (Auth0, Cognito, Firebase, Supabase, Clerk, Keycloak...).

The token comes from a cookie or from ``Authorization: Bearer``; it is verified against the
provider's JWKS, fetched over HTTP and cached. A token naming a ``kid`` the cached set lacks
makes the bridge fetch the set again, at most once every ``JWKS_MIN_REFETCH`` seconds, which
is how providers announce a rotated key without letting forged kids hammer them. Only the
configured public-key algorithms are accepted: never ``none``, never HMAC (a public key used
as an HMAC secret is the classic forgery), and the key's type must match the algorithm.
``iss``, ``aud`` and ``exp`` are required; ``nbf`` and ``iat`` are checked when present.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import cached_property

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet
from quart import Request

from bridge.errors import IdentityProviderUnavailable
from bridge.identity import Claims, Identity
from bridge.identity.fields import claims_of, subject_of
from bridge.identity.peer import PeerSource
from bridge.identity.refetch import JWKS_MAX_AGE, JWKS_MIN_REFETCH, Refetched
from bridge.settings.schema import JWTLoginSettings

log = logging.getLogger("bridge.jwt_login")

MAX_JWT_LENGTH = 16 * 1024
MAX_JWKS_BYTES = 512 * 1024
_KEY_TYPES = {"R": "RSA", "P": "RSA", "E": "EC"}  # by the algorithm's first letter; else OKP


def pick_key(key_set: KeySet, kid: str | None, alg: str) -> Key | None:
    """Return the one signing key of ``alg``'s type (and ``kid``, if given), else None."""
    kty = _KEY_TYPES.get(alg[0], "OKP")
    candidates = [
        key
        for key in key_set.keys
        if key.key_type == kty and key.get("use") in (None, "sig") and key.get("alg") in (None, alg)
    ]
    if kid is not None:
        candidates = [key for key in candidates if key.kid == kid]
    return candidates[0] if len(candidates) == 1 else None


class JWTSource(PeerSource[JWTLoginSettings]):
    method = "jwt"
    remote = False
    max_answer_bytes = MAX_JWKS_BYTES

    @cached_property
    def _keys(self) -> Refetched[KeySet]:
        # No key set yet: the next request asks again (a site's login is down until it has one).
        return Refetched(self._fetch, self.clock, cold_backoff=False)

    def token(self, request: Request) -> str | None:
        if self.settings.cookie:
            return request.cookies.get(self.settings.cookie) or None
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return value.strip() or None

    async def identify(self, request: Request, record: object = None) -> Identity | None:
        claims = await self.verify(self.token(request))
        if claims is None:
            return None
        subject = subject_of(claims, self.settings.user_field)
        if subject is None:
            return None
        return Identity(
            subject=subject,
            method=self.method,
            claims=claims_of(claims, self.settings.claim_fields),
        )

    async def verify(self, token: str | None) -> Claims | None:
        """Return the token's claims if it is valid for this site, else None."""
        if not token or len(token) > MAX_JWT_LENGTH or token.count(".") != 2:
            return None
        try:
            header = dict(jws.extract_compact(token.encode("ascii")).headers())
        except (JoseError, ValueError, TypeError, UnicodeError):
            return None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.settings.algorithms:
            return None  # "none", HS256 and anything not configured
        if kid is not None and not isinstance(kid, str):
            return None
        key = pick_key(await self.keys(), kid, alg)
        if key is None and kid is not None:
            key = pick_key(await self.keys(unknown_kid=True), kid, alg)
        if key is None:
            return None
        try:
            decoded = jwt.decode(token, key, algorithms=[alg])
            claims = dict(decoded.claims)
            self._registry().validate(claims)
        except (JoseError, ValueError, TypeError):
            return None
        return claims

    def _registry(self) -> jwt.JWTClaimsRegistry:
        audience = self.settings.audience
        return jwt.JWTClaimsRegistry(
            now=lambda: int(self.clock()),
            leeway=self.settings.leeway,
            iss={"essential": True, "value": self.settings.issuer},
            aud={"essential": True, "values": list(audience)},
            exp={"essential": True},
        )

    async def keys(self, *, unknown_kid: bool = False) -> KeySet:
        """Return the cached key set; fetch it when missing, old, or for an unknown kid."""
        return await self._keys.get(JWKS_MIN_REFETCH if unknown_kid else JWKS_MAX_AGE)

    async def _fetch(self) -> KeySet:
        try:
            response = await self.http.get(self.settings.jwks_url)
        except httpx.HTTPError as exc:  # refused, past the deadline, too large, not decodable
            log.warning("jwks unreachable")
            raise IdentityProviderUnavailable() from exc
        if response.status_code != 200:
            log.warning("jwks answer unusable", extra={"fields": {"status": response.status_code}})
            raise IdentityProviderUnavailable()
        try:
            data = json.loads(response.content)
            if not isinstance(data, Mapping):
                raise ValueError("not an object")
            return KeySet.import_key_set(data)  # type: ignore[arg-type]
        # RecursionError: JSON nested beyond Python's stack
        except (JoseError, ValueError, TypeError, KeyError, RecursionError) as exc:
            log.warning("jwks unusable")
            raise IdentityProviderUnavailable() from exc
