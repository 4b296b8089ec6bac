"""The identity source for OIDC sessions: the identity lives in the bridge's session record and
stays valid while the provider keeps renewing its tokens, which are sealed in the record like
Sentifyd's."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from bridge.errors import (
    LoginEnded,
    RefreshRefused,
    SessionGone,
)
from bridge.identity import Identity, Method
from bridge.identity.oidc.provider import METHOD, OIDCProvider
from bridge.identity.oidc.tokens import session_claims
from bridge.observe.incoming import Incoming
from bridge.sessions.manager import ProviderTokens, SessionManager, SessionRecord
from bridge.settings.schema import Settings

log = logging.getLogger("bridge.oidc")

# Renew the provider's tokens this long before they expire.
REFRESH_MARGIN = 30.0


class OIDCSource:
    """The identity of a session an OIDC login made, while the provider keeps it alive."""

    method: Method = METHOD
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
        link = record.extra.oidc if record is not None else None
        if link is None:
            return None
        provider = self.providers.get(link.provider)
        if provider is None or link.iss != provider.issuer:
            return None
        return provider

    def login_url(self, next_path: str) -> str:
        return self.settings.server.path_for("/login") + "?" + urlencode({"next": next_path})

    async def identify(self, request: Incoming, record: SessionRecord | None) -> Identity | None:
        if record is None or record.method != METHOD:
            return None
        provider, link = self.provider_of(record), record.extra.oidc
        if provider is None or link is None:
            return None
        if link.refresh_expires_at is not None and self.clock() >= link.refresh_expires_at:
            # The provider said when its session would lapse unless renewed; it has.
            raise LoginEnded("upstream_refused")
        # Without a refresh token the session's own expiry is already the tokens' expiry.
        if not link.refreshable or self.clock() < link.expires_at - REFRESH_MARGIN:
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
            link = fresh.extra.oidc if fresh is not None else None
            if fresh is None or link is None:
                raise LoginEnded("upstream_refused")
            if self.clock() < link.expires_at - REFRESH_MARGIN:
                # Another request renewed them while this one waited.
                record.claims = fresh.claims
                return Identity(subject=fresh.subject, method=METHOD, claims=dict(fresh.claims))
            sealed = self.sessions.open_provider_tokens(cookie_token, fresh.id, link.tokens)
            refresh_token = sealed.refresh_token
            if not refresh_token:
                raise LoginEnded("upstream_refused")
            try:
                tokens = await provider.refresh(refresh_token, link.sub)
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
            kept = ProviderTokens(
                id_token=tokens.id_token or sealed.id_token, refresh_token=tokens.refresh_token
            )
            link.tokens = self.sessions.seal_provider_tokens(cookie_token, fresh.id, kept)
            link.expires_at = tokens.expires_at
            link.refresh_expires_at = tokens.refresh_expires_at
            try:
                await self.sessions.save(fresh, fence=lease)
            except SessionGone as exc:
                # Ended (logged out, revoked) while the provider answered: it stays ended.
                raise LoginEnded("logout") from exc
            record.claims = fresh.claims
            return Identity(subject=fresh.subject, method=METHOD, claims=dict(fresh.claims))
