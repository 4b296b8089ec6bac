"""Single sign-on: the bridge as an OpenID Connect relying party.

:class:`OIDCProvider` speaks to one provider: discovery, JWKS (with rotation), the
authorization URL (PKCE S256, state, nonce), the code exchange and refreshes (authlib, with
``client_secret_basic`` or ``client_secret_post``), userinfo, and the validation of ID tokens
and back-channel logout tokens (joserfc). :class:`OIDCSource` is the identity source: an OIDC
session's identity lives in the bridge's session record, and stays valid while the provider
keeps renewing its tokens. The provider's tokens are sealed in the record like Sentifyd's.

Everything that goes wrong with a token is a :class:`TokenRejected` with a short reason for the
log; the routes turn it into a fixed 400 answer, so nothing from the token reaches the client.
"""

from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import ipaddress
import logging
import secrets
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import authlib.deprecate
import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import Key, KeySet
from quart import Request

from bridge.errors import (
    IdentityProviderUnavailable,
    LoginEnded,
    RefreshRefused,
    SessionGone,
    TokenRejected,
)
from bridge.identity import Identity
from bridge.outbound import bounded
from bridge.sessions import SessionManager, SessionRecord
from bridge.settings import LOOPBACK_HOSTS, OIDCProviderSettings, Settings

# authlib 1.9 prefers the "httpx2" package and warns, once, on importing its httpx client when it
# falls back to httpx; the bridge uses plain httpx on purpose (one HTTP stack). Silenced for that
# import alone: the process's own warning filters stay as they are.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message="The httpx module is deprecated",
        category=authlib.deprecate.AuthlibDeprecationWarning,
    )
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.oidc.core.util import create_half_hash  # noqa: E402

log = logging.getLogger("bridge.oidc")

METHOD = "oidc"
# Algorithms the bridge verifies: asymmetric only (an HS* token would be keyed with the
# client secret, which the bridge does not want to double as a signing key), never "none".
ASYMMETRIC_ALGS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
    "EdDSA", "Ed25519",
)  # fmt: skip
# The key type each algorithm is verified with; EdDSA only on Ed25519 keys (OKP, RFC 8037).
EDDSA_ALGS = ("EdDSA", "Ed25519")
MAX_JWT_LENGTH = 16 * 1024
MAX_DOCUMENT_BYTES = 512 * 1024
METADATA_MAX_AGE = 3600.0
JWKS_MAX_AGE = 3600.0
# An unknown kid refetches the JWKS at most this often, so forged tokens cannot make the
# bridge hammer the provider.
JWKS_MIN_REFETCH = 10.0
# After a failed fetch of the provider's documents, wait this long (doubling per failure, up to
# the cap) before asking again: meanwhile a cached copy is used, or the login fails at once.
FETCH_BACKOFF = 5.0
FETCH_BACKOFF_MAX = 300.0
# Renew the provider's tokens this long before they expire.
REFRESH_MARGIN = 30.0
LOGOUT_TOKEN_MAX_AGE = 300
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPES = ("logout+jwt", "application/logout+jwt", "jwt")
# Claims that describe the token rather than the person: not kept in the session's claims.
TOKEN_CLAIMS = frozenset(
    {"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "jti", "sid",
     "auth_time", "s_hash", "events", "typ"}
)  # fmt: skip
MAX_CLAIMS_BYTES = 8 * 1024


class _NoCookies(http.cookiejar.CookiePolicy):
    """Keep no cookie from a provider: one client serves every visitor."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: Any) -> bool:
        return False

    def path_return_ok(self, path: str, request: Any) -> bool:
        return False


def cookieless_jar() -> http.cookiejar.CookieJar:
    """Return a cookie jar that never stores or sends a cookie."""
    return http.cookiejar.CookieJar(policy=_NoCookies())


def issuer_hash(issuer: str) -> str:
    return hashlib.sha256(issuer.encode("utf-8")).hexdigest()[:16]


@dataclass
class ProviderTokens:
    """What a token response gave, already checked."""

    claims: dict[str, Any]
    id_token: str
    access_token: str
    refresh_token: str | None
    expires_at: float
    refresh_expires_at: float | None = None

    def __repr__(self) -> str:
        return f"ProviderTokens(sub={self.claims.get('sub')!r}, expires_at={self.expires_at})"


@dataclass
class _Cache:
    metadata: dict[str, Any] | None = None
    metadata_at: float = 0.0
    keys: KeySet | None = None
    keys_at: float = 0.0
    # Failed fetches in a row, and when the next one may be tried.
    metadata_failures: int = 0
    metadata_retry_at: float = 0.0
    keys_failures: int = 0
    keys_retry_at: float = 0.0


def _backoff(failures: int) -> float:
    return float(min(FETCH_BACKOFF * 2 ** (failures - 1), FETCH_BACKOFF_MAX))


class OIDCProvider:
    """One OpenID provider: its metadata, its keys, and the flows the bridge runs with it."""

    def __init__(
        self,
        settings: OIDCProviderSettings,
        public_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        timeout = settings.timeout
        self.name = settings.name
        self.issuer = settings.issuer
        self.issuer_hash = issuer_hash(settings.issuer)
        self.public_url = public_url.rstrip("/")
        self.redirect_uri = self.public_url + settings.redirect_path
        self.post_logout_redirect_uri = self.public_url + settings.post_logout_redirect_path
        self.clock = clock
        # Loopback and private endpoints are for a provider on this machine only (tests, a
        # local IdP): a remote provider's discovery must not aim the bridge, or the client
        # secret it sends to the token endpoint, at the bridge's own network.
        self.local = _is_loopback_host(urlsplit(settings.issuer).hostname or "")
        self.client = AsyncOAuth2Client(
            client_id=settings.client_id,
            client_secret=settings.client_secret.reveal(),
            token_endpoint_auth_method=settings.token_endpoint_auth_method,
            scope=" ".join(settings.scopes),
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            # One deadline per call (documents, JWKS, token, userinfo, revocation), body
            # included, and no answer longer than a provider document may be.
            **bounded(transport, timeout=timeout, max_bytes=MAX_DOCUMENT_BYTES),
            timeout=timeout,
            follow_redirects=False,
            cookies=cookieless_jar(),
        )
        self._cache = _Cache()

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- provider documents -----------------------------------------------------------------

    async def _get_json(
        self, url: str, what: str, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """GET a JSON object from the provider; anything else is IdentityProviderUnavailable."""
        try:
            response = await self.client.request("GET", url, withhold_token=True, headers=headers)
        except httpx.HTTPError as exc:
            log.warning(
                "provider unreachable", extra={"fields": {"provider": self.name, "what": what}}
            )
            raise IdentityProviderUnavailable() from exc
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            log.warning(
                "provider answer unusable",
                extra={
                    "fields": {"provider": self.name, "what": what, "status": response.status_code}
                },
            )
            raise IdentityProviderUnavailable()
        try:
            data = response.json()
        except (ValueError, RecursionError) as exc:  # RecursionError: nested beyond the stack
            raise IdentityProviderUnavailable() from exc
        if not isinstance(data, dict):
            raise IdentityProviderUnavailable()
        return data

    async def metadata(self) -> dict[str, Any]:
        """Return the provider's discovery document (cached; a stale copy beats none)."""
        now = self.clock()
        cache = self._cache
        cached = cache.metadata
        if cached is not None and now - cache.metadata_at < METADATA_MAX_AGE:
            return cached
        if now < cache.metadata_retry_at:
            if cached is not None:
                return cached
            raise IdentityProviderUnavailable()
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            data = await self._get_json(url, "discovery")
            self._check_metadata(data)
        except IdentityProviderUnavailable:
            cache.metadata_failures += 1
            cache.metadata_retry_at = now + _backoff(cache.metadata_failures)
            if cached is not None:
                return cached
            raise
        cache.metadata, cache.metadata_at = data, now
        cache.metadata_failures, cache.metadata_retry_at = 0, 0.0
        return data

    def _check_metadata(self, data: Mapping[str, Any]) -> None:
        # OpenID Connect Discovery 1.0, 4.3: the document must name exactly our issuer.
        if data.get("issuer") != self.issuer:
            log.warning("discovery issuer mismatch", extra={"fields": {"provider": self.name}})
            raise IdentityProviderUnavailable()
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = data.get(key)
            if not isinstance(value, str) or not self.safe_endpoint(value):
                log.warning(
                    "discovery endpoint unusable",
                    extra={"fields": {"provider": self.name, "endpoint": key}},
                )
                raise IdentityProviderUnavailable()

    def safe_endpoint(self, url: str) -> bool:
        """Whether the bridge may call (or send a browser to) this endpoint of the provider."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not host or parts.scheme not in ("https", "http"):
            return False
        if self.local:
            return parts.scheme == "https" or _is_loopback_host(host)
        return parts.scheme == "https" and not _is_private_host(host)

    def signing_algs(self, metadata: Mapping[str, Any]) -> list[str]:
        offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        if not isinstance(offered, list):
            return []
        return [alg for alg in offered if alg in ASYMMETRIC_ALGS]

    async def keys(self, *, refresh: bool = False) -> KeySet:
        """Return the provider's signing keys; refetch when old or when asked (throttled).

        A failed refetch keeps the cached keys and backs off, so a provider that is down is
        asked again only every few seconds to minutes, not on every login.
        """
        now = self.clock()
        cache = self._cache
        cached = cache.keys
        age = now - cache.keys_at
        if cached is not None and age < JWKS_MAX_AGE and not (refresh and age >= JWKS_MIN_REFETCH):
            return cached
        if now < cache.keys_retry_at:
            if cached is not None:
                return cached
            raise IdentityProviderUnavailable()
        try:
            metadata = await self.metadata()
            data = await self._get_json(metadata["jwks_uri"], "jwks")
            try:
                key_set = KeySet.import_key_set(data)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                log.warning("provider jwks unusable", extra={"fields": {"provider": self.name}})
                raise IdentityProviderUnavailable() from exc
        except IdentityProviderUnavailable:
            cache.keys_failures += 1
            cache.keys_retry_at = now + _backoff(cache.keys_failures)
            if cached is not None:
                return cached
            raise
        cache.keys, cache.keys_at = key_set, now
        cache.keys_failures, cache.keys_retry_at = 0, 0.0
        return key_set

    # --- tokens -----------------------------------------------------------------------------

    async def verify_jwt(self, token: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Check a signed JWT against the provider's keys; return its header and claims."""
        if not isinstance(token, str) or len(token) > MAX_JWT_LENGTH or token.count(".") != 2:
            raise TokenRejected("malformed")
        try:
            header = dict(jws.extract_compact(token.encode("ascii")).headers())
        except (JoseError, ValueError, TypeError, UnicodeError) as exc:
            raise TokenRejected("malformed") from exc
        alg = header.get("alg")
        metadata = await self.metadata()
        if not isinstance(alg, str) or alg not in self.signing_algs(metadata):
            raise TokenRejected("alg_not_allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed")
        key = _pick_key(await self.keys(), kid, alg)
        if key is None:
            # A new kid is how providers announce a rotated key: look once more.
            key = _pick_key(await self.keys(refresh=True), kid, alg)
        if key is None:
            raise TokenRejected("unknown_kid")
        try:
            with warnings.catch_warnings():
                # joserfc warns that RFC 9864 deprecates the name "EdDSA" (for "Ed25519"), yet it
                # is the name providers publish; the key picked is an Ed25519 key either way.
                warnings.simplefilter("ignore", SecurityWarning)
                decoded = jwt.decode(token, key, algorithms=[alg])
        except JoseError as exc:
            raise TokenRejected("bad_signature") from exc
        except (ValueError, TypeError, RecursionError) as exc:  # claims that are not JSON
            raise TokenRejected("malformed") from exc
        return header, dict(decoded.claims)

    @staticmethod
    def _claims_error(exc: JoseError) -> TokenRejected:
        return TokenRejected(f"claims:{getattr(exc, 'claim', '') or type(exc).__name__}")

    def _registry(self, **options: Any) -> jwt.JWTClaimsRegistry:
        return jwt.JWTClaimsRegistry(
            now=lambda: int(self.clock()),
            leeway=self.settings.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.settings.client_id},
            iat={"essential": True},
            **options,
        )

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
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
    ) -> dict[str, Any]:
        """Validate an ID token (signature, iss, aud, azp, exp, iat, nonce); return its claims.

        ``nonce`` is required for a login; a refresh passes None and the ``subject`` it
        expects instead (OpenID Connect Core 12.2).
        """
        header, claims = await self.verify_jwt(id_token)
        registry = self._registry(exp={"essential": True}, sub={"essential": True})
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise self._claims_error(exc) from exc
        self._check_audience(claims)
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
            expected = _half_hash(access_token, header["alg"])
            if expected is None or not secrets.compare_digest(
                expected.decode("ascii"), str(at_hash)
            ):
                raise TokenRejected("at_hash_mismatch")
        return claims

    async def validate_logout_token(self, logout_token: Any) -> dict[str, Any]:
        """Validate a back-channel logout token (OpenID Connect Back-Channel Logout 1.0, 2.6)."""
        header, claims = await self.verify_jwt(logout_token)
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in LOGOUT_TOKEN_TYPES):
            raise TokenRejected("typ_not_logout")
        # Back-Channel Logout 1.0, 2.4: exp is required, like iat and jti.
        registry = self._registry(exp={"essential": True}, jti={"essential": True})
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise self._claims_error(exc) from exc
        self._check_audience(claims)
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

    # --- flows ------------------------------------------------------------------------------

    async def authorization_url(self, *, state: str, nonce: str, code_verifier: str) -> str:
        metadata = await self.metadata()
        extra: dict[str, Any] = {}
        if self.settings.max_session_age:
            # The provider must re-authenticate anyone whose sign-in is older than this.
            extra["max_age"] = self.settings.max_session_age
        url, _ = self.client.create_authorization_url(
            metadata["authorization_endpoint"],
            state=state,
            nonce=nonce,
            code_verifier=code_verifier,
            **extra,
        )
        return str(url)

    async def _token_request(self, **kwargs: Any) -> dict[str, Any]:
        metadata = await self.metadata()
        try:
            if kwargs.get("grant_type") == "refresh_token":
                kwargs.pop("grant_type")
                # No scope: RFC 6749, 6 renews what was granted, and asking again for scopes
                # the provider left out of the grant would be refused.
                token = await self.client.refresh_token(
                    metadata["token_endpoint"], scope=None, **kwargs
                )
            else:
                token = await self.client.fetch_token(metadata["token_endpoint"], **kwargs)
        except OAuthError as exc:
            if exc.error in ("server_error", "temporarily_unavailable"):
                # The provider is having trouble, not saying no: the session survives this.
                raise IdentityProviderUnavailable() from exc
            raise RefreshRefused(str(exc.error)) from exc
        except httpx.HTTPError as exc:
            raise IdentityProviderUnavailable() from exc
        except (ValueError, RecursionError) as exc:  # a token response that is not JSON
            raise IdentityProviderUnavailable() from exc
        finally:
            # The client is shared by every visitor; keep no one's tokens on it.
            self.client.token = None
        return dict(token)

    def _tokens(self, response: Mapping[str, Any], claims: dict[str, Any]) -> ProviderTokens:
        access_token = response.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise TokenRejected("access_token_missing")
        token_type = response.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise TokenRejected("token_type")
        now = self.clock()
        expires_in = response.get("expires_in")
        if (
            isinstance(expires_in, int | float)
            and not isinstance(expires_in, bool)
            and expires_in > 0
        ):
            expires_at = now + float(expires_in)
        else:
            expires_at = float(claims["exp"])
        refresh = response.get("refresh_token")
        refresh_expires_in = response.get("refresh_expires_in")  # Keycloak tells; others do not
        refresh_expires_at = None
        if isinstance(refresh_expires_in, int) and refresh_expires_in > 0:
            refresh_expires_at = now + refresh_expires_in
        return ProviderTokens(
            claims=claims,
            id_token=str(response["id_token"]),
            access_token=access_token,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=expires_at,
            refresh_expires_at=refresh_expires_at,
        )

    async def exchange_code(self, code: str, *, code_verifier: str, nonce: str) -> ProviderTokens:
        """Trade an authorization code for tokens and validate the ID token."""
        try:
            response = await self._token_request(
                grant_type="authorization_code", code=code, code_verifier=code_verifier
            )
        except RefreshRefused as exc:
            raise TokenRejected("code_refused") from exc
        if "id_token" not in response:
            raise TokenRejected("id_token_missing")
        access_token = response.get("access_token")
        claims = await self.validate_id_token(
            response["id_token"],
            nonce=nonce,
            access_token=access_token if isinstance(access_token, str) else None,
        )
        max_age = self.settings.max_session_age
        if max_age:
            # OpenID Connect Core 3.1.2.1: with max_age, auth_time is required and must be recent.
            auth_time = claims.get("auth_time")
            if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
                raise TokenRejected("auth_time_missing")
            if self.clock() - auth_time > max_age + self.settings.leeway:
                raise TokenRejected("auth_time_too_old")
        tokens = self._tokens(response, claims)
        if self.settings.claims_from_userinfo:
            tokens.claims = {**claims, **await self.userinfo(tokens.access_token, claims["sub"])}
        return tokens

    async def refresh(self, refresh_token: str, subject: str) -> ProviderTokens:
        """Renew the tokens; raise :class:`RefreshRefused` when the provider says no."""
        response = await self._token_request(
            grant_type="refresh_token", refresh_token=refresh_token
        )
        access_token = response.get("access_token")
        if "id_token" in response:
            try:
                claims = await self.validate_id_token(
                    response["id_token"],
                    nonce=None,
                    subject=subject,
                    access_token=access_token if isinstance(access_token, str) else None,
                )
            except TokenRejected as exc:
                log.warning(
                    "refreshed id token rejected",
                    extra={"fields": {"provider": self.name, "reason": exc.reason}},
                )
                raise RefreshRefused(exc.reason) from exc
        else:
            claims = {"sub": subject}
            response = {**response, "id_token": ""}
        if "exp" not in claims:
            # Neither expires_in nor an ID token: check back with the provider in five minutes.
            claims = {**claims, "exp": self.clock() + 300}
        try:
            tokens = self._tokens(response, claims)
        except TokenRejected as exc:
            raise RefreshRefused(exc.reason) from exc
        if "refresh_token" not in response:
            tokens.refresh_token = refresh_token
        if self.settings.claims_from_userinfo:
            try:
                userinfo = await self.userinfo(tokens.access_token, subject)
            except TokenRejected as exc:
                raise RefreshRefused(exc.reason) from exc
            tokens.claims = {**tokens.claims, **userinfo}
        return tokens

    async def userinfo(self, access_token: str, subject: str) -> dict[str, Any]:
        """Fetch userinfo claims (only those configured); its ``sub`` must match the ID token's."""
        metadata = await self.metadata()
        url = metadata.get("userinfo_endpoint")
        if not isinstance(url, str) or not self.safe_endpoint(url):
            return {}
        # A signed (JWT) userinfo answer is not JSON, and not supported: unavailable.
        data = await self._get_json(
            url, "userinfo", headers={"Authorization": f"Bearer {access_token}"}
        )
        if data.get("sub") != subject:
            raise TokenRejected("userinfo_subject_mismatch")
        wanted = self.settings.claims_from_userinfo
        if isinstance(wanted, tuple):
            data = {k: v for k, v in data.items() if k in wanted}
        return {k: v for k, v in data.items() if k not in TOKEN_CLAIMS and k != "sub"}

    async def end_session_url(self, id_token: str | None) -> str | None:
        """Return the RP-initiated logout URL, or None when the provider has none."""
        try:
            metadata = await self.metadata()
        except IdentityProviderUnavailable:
            return None
        endpoint = metadata.get("end_session_endpoint")
        if not isinstance(endpoint, str) or not self.safe_endpoint(endpoint):
            return None
        params = {
            "client_id": self.settings.client_id,
            "post_logout_redirect_uri": self.post_logout_redirect_uri,
        }
        if id_token:
            params["id_token_hint"] = id_token
        separator = "&" if "?" in endpoint else "?"
        return endpoint + separator + urlencode(params)

    async def revoke(self, refresh_token: str) -> None:
        """Ask the provider to forget a refresh token, if it offers revocation (best effort)."""
        try:
            metadata = await self.metadata()
            endpoint = metadata.get("revocation_endpoint")
            if isinstance(endpoint, str) and self.safe_endpoint(endpoint):
                await self.client.revoke_token(
                    endpoint,
                    token=refresh_token,
                    token_type_hint="refresh_token",  # noqa: S106
                )
        except (httpx.HTTPError, IdentityProviderUnavailable, OAuthError):
            log.info("provider token revocation failed", extra={"fields": {"provider": self.name}})


def _key_fits(key: Key, alg: str) -> bool:
    if alg in EDDSA_ALGS:
        return key.key_type == "OKP" and key.get("crv") == "Ed25519"
    return key.key_type == {"R": "RSA", "P": "RSA", "E": "EC"}[alg[0]]


def _pick_key(key_set: KeySet, kid: str | None, alg: str) -> Key | None:
    candidates = [
        key
        for key in key_set.keys
        if _key_fits(key, alg) and key.get("use") in (None, "sig") and key.get("alg") in (None, alg)
    ]
    if kid is not None:
        candidates = [key for key in candidates if key.kid == kid]
    # Without a kid, only an unambiguous key will do.
    return candidates[0] if len(candidates) == 1 else None


def _half_hash(value: str, alg: str) -> bytes | None:
    """at_hash for ``alg`` (OpenID Connect Core 3.1.3.6); Ed25519 hashes with SHA-512."""
    if alg in EDDSA_ALGS:
        digest = hashlib.sha512(value.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=")
    half: bytes | None = create_half_hash(value, alg)
    return half


def _ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:  # "2130706433", "0x7f.1" and "127.1" reach 127.0.0.1 too
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_loopback_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in LOOPBACK_HOSTS or host.endswith(".localhost"):
        return True
    ip = _ip_of(host)
    return ip is not None and ip.is_loopback


def _is_private_host(host: str) -> bool:
    """Whether ``host`` names this machine or a non-public network (by name or address)."""
    if _is_loopback_host(host):
        return True
    ip = _ip_of(host.lower().rstrip("."))
    return ip is not None and not ip.is_global


def session_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the claims that describe the person (for access rules), within a size bound."""
    kept: dict[str, Any] = {}
    size = 0
    for key, value in claims.items():
        if key in TOKEN_CLAIMS or key == "sub":
            continue
        size += len(key) + len(repr(value))
        if size > MAX_CLAIMS_BYTES:
            break
        kept[key] = value
    return kept


class OIDCSource:
    """The identity of a session an OIDC login made, while the provider keeps it alive."""

    method = METHOD
    remote = False

    def __init__(
        self,
        settings: Settings,
        providers: Sequence[OIDCProvider],
        sessions: SessionManager,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.providers = {p.name: p for p in providers}
        self.sessions = sessions
        self.clock = clock

    def subject_for(self, provider: OIDCProvider, sub: str) -> str:
        # Two providers may hand out the same sub: with several, the bridge user names both.
        return sub if len(self.providers) == 1 else f"{provider.name}:{sub}"

    def provider_of(self, record: SessionRecord | None) -> OIDCProvider | None:
        data = record.extra.get("oidc") if record is not None else None
        if not isinstance(data, dict):
            return None
        provider = self.providers.get(str(data.get("provider")))
        if provider is None or data.get("iss") != provider.issuer:
            return None
        return provider

    def login_url(self, next_path: str) -> str:
        return self.settings.server.path_for("/login") + "?" + urlencode({"next": next_path})

    async def identify(self, request: Request, record: SessionRecord | None) -> Identity | None:
        if record is None or record.method != METHOD:
            return None
        provider = self.provider_of(record)
        if provider is None:
            return None
        data = record.extra["oidc"]
        refresh_ends = data.get("refresh_expires_at")
        if refresh_ends is not None and self.clock() >= float(refresh_ends):
            # The provider said when its session would lapse unless renewed; it has.
            raise LoginEnded("upstream_refused")
        # Without a refresh token the session's own expiry is already the tokens' expiry.
        if not data.get("refreshable") or (
            self.clock() < float(data.get("expires_at", 0)) - REFRESH_MARGIN
        ):
            return Identity(subject=record.subject, method=METHOD, claims=dict(record.claims))
        token = self.sessions.cookie_token(request)
        if token is None:
            return None
        return await self._renew(provider, record, token)

    async def _renew(
        self, provider: OIDCProvider, record: SessionRecord, cookie_token: str
    ) -> Identity:
        """Renew the provider's tokens under the session's lock; end the session if refused."""
        store = self.sessions.store
        async with store.lock(
            self.sessions.lock_name(record.id), wait=self.settings.store.lock_wait
        ) as lease:
            fresh = await self.sessions.load_by_id(record.id)
            if fresh is None:
                raise LoginEnded("upstream_refused")
            data = fresh.extra["oidc"]
            if self.clock() < float(data.get("expires_at", 0)) - REFRESH_MARGIN:
                # Another request renewed them while this one waited.
                record.claims = fresh.claims
                return Identity(subject=fresh.subject, method=METHOD, claims=dict(fresh.claims))
            sealed = self.sessions.sealer.open(cookie_token, fresh.id, data.get("tokens", ""))
            refresh_token = (sealed or {}).get("refresh_token")
            if not refresh_token:
                raise LoginEnded("upstream_refused")
            try:
                tokens = await provider.refresh(refresh_token, data["sub"])
            except RefreshRefused as exc:
                log.info(
                    "provider refused refresh",
                    extra={"fields": {"provider": provider.name, "error": str(exc)[:64]}},
                )
                raise LoginEnded("upstream_refused") from exc
            if tokens.id_token:
                # The provider's current word replaces the old one (a removed group is gone).
                fresh.claims = session_claims(tokens.claims)
            else:
                fresh.claims = {**fresh.claims, **session_claims(tokens.claims)}
            store_tokens = {
                "id_token": tokens.id_token or (sealed or {}).get("id_token"),
                "refresh_token": tokens.refresh_token,
            }
            data["tokens"] = self.sessions.sealer.seal(cookie_token, fresh.id, store_tokens)
            data["expires_at"] = tokens.expires_at
            data["refresh_expires_at"] = tokens.refresh_expires_at
            try:
                await self.sessions.save(fresh, fence=lease)
            except SessionGone as exc:
                # Ended (logged out, revoked) while the provider answered: it stays ended.
                raise LoginEnded("logout") from exc
            record.claims = fresh.claims
            return Identity(subject=fresh.subject, method=METHOD, claims=dict(fresh.claims))


__all__ = [
    "METHOD",
    "OIDCProvider",
    "OIDCSource",
    "ProviderTokens",
    "cookieless_jar",
    "issuer_hash",
    "session_claims",
]
