"""A site whose login is a JWT (Auth0, Cognito, Firebase, Supabase, Clerk, Keycloak...).

The token comes from a cookie or from ``Authorization: Bearer``; it is verified against the
provider's JWKS, fetched over HTTP and cached. A token naming a ``kid`` the cached set lacks
(or whose algorithm no cached key fits) makes the bridge fetch the set again, at most once
every ``JWKS_MIN_REFETCH`` seconds, which is how providers announce a rotated key without
letting forged kids hammer them. Only the configured public-key algorithms are accepted: never
``none``, never HMAC (a public key used as an HMAC secret is the classic forgery), and the
key's type must match the algorithm (:mod:`bridge.identity.jose` holds that table and checks).
``iss``, ``aud`` and ``exp`` are required; ``nbf`` and ``iat`` are checked when present.
"""

from __future__ import annotations

import json
import logging
from functools import cached_property

import httpx

from bridge.errors import BridgeError, IdentityProviderUnavailable, TokenRejected
from bridge.identity import Claims, Identity, Method, jose
from bridge.identity.fields import claims_of, subject_of
from bridge.identity.peer import PeerSource
from bridge.identity.refetch import JWKS_MAX_AGE, JWKS_MIN_REFETCH, Refetched
from bridge.observe.incoming import Incoming
from bridge.settings.schema import JWTLoginSettings

log = logging.getLogger("bridge.jwt_login")

MAX_JWKS_BYTES = 512 * 1024


class JWTSource(PeerSource[JWTLoginSettings]):
    method: Method = "jwt"
    remote = False
    max_answer_bytes = MAX_JWKS_BYTES

    @cached_property
    def _keys(self) -> Refetched[jose.KeySet]:
        # No key set yet: the next request asks again (a site's login is down until it has one).
        return Refetched(self._fetch, self.clock, cold_backoff=False)

    def token(self, request: Incoming) -> str | None:
        if self.settings.cookie:
            return request.cookies.get(self.settings.cookie) or None
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return value.strip() or None

    async def identify(self, request: Incoming, record: object = None) -> Identity | None:
        try:
            claims = await self.verify(self.token(request))
        except BridgeError:
            raise  # the JWKS unreachable: a 503, not a logout
        except Exception as exc:  # noqa: BLE001 - a token no check foresaw is still no login
            # The type only: the message could quote the token.
            log.warning("jwt unreadable", extra={"fields": {"error": type(exc).__name__}})
            return None
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
        if not token:
            return None
        try:
            _, claims = await jose.verify(token, self.settings.algorithms, self._key_set)
            jose.check_claims(
                claims,
                now=int(self.clock()),
                leeway=self.settings.leeway,
                iss={"essential": True, "value": self.settings.issuer},
                aud={"essential": True, "values": list(self.settings.audience)},
                exp={"essential": True},
            )
        except TokenRejected:
            return None
        return claims

    async def _key_set(self, refetch: bool) -> jose.KeySet:
        return await self.keys(unknown_kid=refetch)

    async def keys(self, *, unknown_kid: bool = False) -> jose.KeySet:
        """Return the cached key set; fetch it when missing, old, or for an unknown kid."""
        return await self._keys.get(JWKS_MIN_REFETCH if unknown_kid else JWKS_MAX_AGE)

    async def _fetch(self) -> jose.KeySet:
        try:
            response = await self.http.get(self.settings.jwks_url)
        except httpx.HTTPError as exc:  # refused, past the deadline, too large, not decodable
            log.warning("jwks unreachable")
            raise IdentityProviderUnavailable() from exc
        if response.status_code != 200:
            log.warning("jwks answer unusable", extra={"fields": {"status": response.status_code}})
            raise IdentityProviderUnavailable()
        try:
            return jose.import_key_set(json.loads(response.content))
        # RecursionError: JSON nested beyond Python's stack
        except (ValueError, RecursionError) as exc:
            log.warning("jwks unusable")
            raise IdentityProviderUnavailable() from exc
