"""One provider's documents: discovery metadata and its JWKS, cached, bounded and refetched
with backoff, over a cookieless HTTP client that reaches only the issuer's own hosts."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import authlib.deprecate
import httpx

from bridge.errors import (
    IdentityProviderUnavailable,
)
from bridge.identity import jose
from bridge.identity.refetch import JWKS_MAX_AGE, JWKS_MIN_REFETCH, Refetched
from bridge.settings.schema import OIDCProviderSettings
from bridge.settings.values import LOOPBACK_HOSTS
from bridge.upstream.outbound import peer_client_options

# authlib 1.9 prefers the "httpx2" package and warns, once, on importing its httpx client when it
# falls back to httpx; the bridge uses plain httpx on purpose (one HTTP stack). Silenced for that
# import alone: the process's own warning filters stay as they are.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message="The httpx module is deprecated",
        category=authlib.deprecate.AuthlibDeprecationWarning,
    )
    from authlib.integrations.httpx_client import AsyncOAuth2Client

log = logging.getLogger("bridge.oidc")

# A provider's JSON answer (discovery metadata, a token or userinfo response), read field by
# field where it is used.
Document = dict[str, Any]

MAX_DOCUMENT_BYTES = 512 * 1024
METADATA_MAX_AGE = 3600.0


def issuer_hash(issuer: str) -> str:
    return hashlib.sha256(issuer.encode("utf-8")).hexdigest()[:16]


class ProviderDocuments:
    """One provider's client and documents; :class:`OIDCProvider` adds the checks and flows."""

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
            **peer_client_options(transport, timeout=timeout, max_bytes=MAX_DOCUMENT_BYTES),
        )
        self._metadata = Refetched(self._fetch_metadata, clock)
        self._keys = Refetched(self._fetch_keys, clock)

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- provider documents -----------------------------------------------------------------

    async def _get_json(
        self, url: str, what: str, headers: dict[str, str] | None = None
    ) -> Document:
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

    async def metadata(self) -> Document:
        """Return the provider's discovery document (cached; a stale copy beats none)."""
        return await self._metadata.get(METADATA_MAX_AGE)

    async def _fetch_metadata(self) -> Document:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        data = await self._get_json(url, "discovery")
        self._check_metadata(data)
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
        return [alg for alg in offered if isinstance(alg, str) and alg in jose.OIDC_ALGORITHMS]

    async def keys(self, *, refresh: bool = False) -> jose.KeySet:
        """Return the provider's signing keys; refetch when old or when asked (throttled)."""
        return await self._keys.get(JWKS_MIN_REFETCH if refresh else JWKS_MAX_AGE)

    async def _fetch_keys(self) -> jose.KeySet:
        data = await self._get_json((await self.metadata())["jwks_uri"], "jwks")
        try:
            return jose.import_key_set(data)
        except ValueError as exc:
            log.warning("provider jwks unusable", extra={"fields": {"provider": self.name}})
            raise IdentityProviderUnavailable() from exc


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
