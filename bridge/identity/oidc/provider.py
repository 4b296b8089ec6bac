"""One OpenID provider and the flows the bridge runs with it: the authorization URL (PKCE S256,
state, nonce), the code exchange and refreshes (authlib, ``client_secret_basic`` or
``client_secret_post``), userinfo, RP-initiated logout and revocation."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.integrations.base_client import OAuthError

from bridge.errors import (
    IdentityProviderUnavailable,
    RefreshRefused,
    TokenRejected,
)
from bridge.identity import Claims, Method
from bridge.identity.oidc.documents import Document
from bridge.identity.oidc.tokens import TOKEN_CLAIMS, TokenChecks

log = logging.getLogger("bridge.oidc")

# How an identity from single sign-on (and the session it starts) is recorded.
METHOD: Method = "oidc"


@dataclass
class ProviderTokens:
    """What a token response gave, already checked."""

    claims: Claims
    id_token: str
    access_token: str
    refresh_token: str | None
    expires_at: float
    refresh_expires_at: float | None = None

    def __repr__(self) -> str:
        return f"ProviderTokens(sub={self.claims.get('sub')!r}, expires_at={self.expires_at})"


class OIDCProvider(TokenChecks):
    """One OpenID provider: its metadata, its keys, and the flows the bridge runs with it."""

    async def authorization_url(self, *, state: str, nonce: str, code_verifier: str) -> str:
        metadata = await self.metadata()
        extra: dict[str, int] = {}
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

    async def _token_request(self, **kwargs: Any) -> Document:
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

    def _tokens(self, response: Mapping[str, Any], claims: Claims) -> ProviderTokens:
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

    async def userinfo(self, access_token: str, subject: str) -> Claims:
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
