"""The OIDC login flow around the provider: state between ``/login`` and ``/callback``, the
session a login makes, and the sessions a logout (front- or back-channel) ends.

``state``, ``nonce`` and the PKCE verifier are random per login and kept in the store under a
hash of ``state`` for ten minutes, single use. They are bound to the browser that started the
login by a random value in a short-lived HttpOnly cookie whose hash the state record holds, so
a callback URL pasted into another browser (login CSRF) fails.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from bridge.errors import (
    HTTPError,
    InvalidLogoutToken,
    LoginFailed,
    TokenRejected,
    UnknownProvider,
)
from bridge.identity import Claims, Identity, jose
from bridge.identity.oidc.provider import METHOD, OIDCProvider
from bridge.identity.oidc.tokens import LOGOUT_TOKEN_MAX_AGE, MAX_JWT_LENGTH, session_claims
from bridge.sessions.manager import (
    ProviderSession,
    ProviderTokens,
    SessionContext,
    SessionExtra,
    SessionManager,
    SessionRecord,
)
from bridge.sessions.oidc_source import OIDCSource
from bridge.sessions.sealing import digest
from bridge.settings.schema import Settings
from bridge.settings.values import local_path_or
from bridge.store.base import JSONObject, Store

log = logging.getLogger("bridge.oidc")

STATE_TTL = 600
MAX_PARAM_LENGTH = 2048
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
# The error codes of RFC 6749 4.1.2.1 and OpenID Connect Core 3.1.2.6; anything else is "other".
PROVIDER_ERRORS = frozenset(
    {"access_denied", "invalid_request", "unauthorized_client", "unsupported_response_type",
     "invalid_scope", "server_error", "temporarily_unavailable", "interaction_required",
     "login_required", "account_selection_required", "consent_required"}
)  # fmt: skip


class PendingLogin(msgspec.Struct, frozen=True):
    """A login :meth:`OIDCLogin.start` began, kept under its state until the callback."""

    provider: str
    nonce: str
    verifier: str
    next: str
    binding: str  # a digest of the browser's binding cookie
    created: float


def _pending_login(stored: JSONObject | None) -> PendingLogin | None:
    if stored is None:
        return None
    try:
        return msgspec.convert(stored, PendingLogin)
    except msgspec.ValidationError:
        return None  # not a login state this bridge wrote


@dataclass
class LoginFinished:
    session: SessionContext
    next_path: str


class OIDCLogin:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        sessions: SessionManager,
        source: OIDCSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.source = source
        self.clock = clock
        base = "sbridge_login"
        self.binding_cookie = f"__Host-{base}" if settings.session.cookie_secure else base
        # However a session ends (logout, revoke, eviction, expiry...), its sid index forgets it.
        sessions.on_end.append(self._forget_sid)

    async def _forget_sid(self, record: SessionRecord) -> None:
        link = record.extra.oidc
        if record.method != METHOD or link is None or not link.sid:
            return
        provider = self.source.provider_of(record)
        if provider is not None:
            await self.store.set_remove(self._sid_key(provider, link.sid), record.id)

    @property
    def providers(self) -> dict[str, OIDCProvider]:
        return self.source.providers

    def provider(self, name: str | None) -> OIDCProvider:
        if name is None:
            return next(iter(self.providers.values()))
        provider = self.providers.get(name)
        if provider is None:
            raise UnknownProvider()
        return provider

    def _state_key(self, state: str) -> str:
        return self.store.key("oidc-state", digest("state:" + state))

    def _sid_key(self, provider: OIDCProvider, sid: str) -> str:
        return self.store.key("oidc-sid", provider.issuer_hash, digest("sid:" + sid)[:32])

    # --- login ------------------------------------------------------------------------------

    async def start(
        self, provider: OIDCProvider, next_path: str | None, binding: str | None
    ) -> tuple[str, str]:
        """Begin a login: return the provider URL to send the browser to and its binding value."""
        if binding is None or not _TOKEN_RE.match(binding):
            binding = secrets.token_urlsafe(32)
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43..128
        url = await provider.authorization_url(state=state, nonce=nonce, code_verifier=verifier)
        pending = PendingLogin(
            provider=str(provider.name),
            nonce=nonce,
            verifier=verifier,
            next=local_path_or(next_path, "/"),
            binding=digest("binding:" + binding),
            created=self.clock(),
        )
        await self.store.set(self._state_key(state), msgspec.to_builtins(pending), STATE_TTL)
        return url, binding

    async def finish(self, args: Mapping[str, str], binding: str | None) -> LoginFinished:
        """Complete a login from the callback's query; raise LoginFailed on any wrong detail."""
        state = args.get("state")
        if not state or len(state) > MAX_PARAM_LENGTH:
            raise LoginFailed()
        key = self._state_key(state)
        pending = _pending_login(await self.store.get(key))
        if pending is None or self.clock() - pending.created > STATE_TTL:
            log.info("login state unknown or expired")
            raise LoginFailed()
        if binding is None or not secrets.compare_digest(
            digest("binding:" + binding), pending.binding
        ):
            log.warning("login state from another browser")
            raise LoginFailed()
        # Single use, across instances: only the first callback with this state gets through.
        if not await self.store.add(key + ":used", {"used": True}, STATE_TTL):
            raise LoginFailed()
        await self.store.delete(key)
        provider = self.provider(pending.provider)
        error = args.get("error")
        if error is not None:
            reported = error if error in PROVIDER_ERRORS else "other"
            log.info(
                "provider refused login",
                extra={"fields": {"provider": provider.name, "error": reported}},
            )
            raise LoginFailed("The sign-in was cancelled or refused.", provider_error=reported)
        await self._check_iss(provider, args.get("iss"))
        code = args.get("code")
        if not code or len(code) > MAX_PARAM_LENGTH:
            raise LoginFailed()
        try:
            tokens = await provider.exchange_code(
                code, code_verifier=pending.verifier, nonce=pending.nonce
            )
        except TokenRejected as exc:
            log.warning(
                "login token rejected",
                extra={"fields": {"provider": provider.name, "reason": exc.reason}},
            )
            raise LoginFailed() from exc
        claims = tokens.claims
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise LoginFailed()
        identity = Identity(
            subject=self.source.subject_for(provider, sub),
            method=METHOD,
            claims=session_claims(claims),
        )
        sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
        link = ProviderSession(
            provider=provider.name,
            iss=provider.issuer,
            sub=sub,
            sid=sid,
            expires_at=tokens.expires_at,
            refreshable=tokens.refresh_token is not None,
            refresh_expires_at=tokens.refresh_expires_at,
        )
        try:
            ctx = await self.sessions.create(identity, extra=SessionExtra(oidc=link))
        except HTTPError:
            # Refused (the user's new-session limit, a revoke): no session will use the grant.
            if tokens.refresh_token:
                await provider.revoke(tokens.refresh_token)
            raise
        record = ctx.record
        limits = self._provider_limits(provider, tokens, claims)
        record.expires_at = min([record.expires_at, *limits])
        link.tokens = self.sessions.seal_provider_tokens(
            ctx.cookie_token,
            record.id,
            ProviderTokens(id_token=tokens.id_token, refresh_token=tokens.refresh_token),
        )
        await self.sessions.save(record)
        if sid:
            # The index lives as long as the session can (not its idle TTL, which activity renews).
            lifetime = max(1.0, record.expires_at - self.clock()) + 60
            await self.store.set_add(self._sid_key(provider, sid), record.id, lifetime)
        return LoginFinished(session=ctx, next_path=local_path_or(pending.next, "/"))

    def _provider_limits(
        self, provider: OIDCProvider, tokens: Any, claims: Mapping[str, Any]
    ) -> list[float]:
        """The bridge session ends no later than the provider's session, as far as it is known."""
        limits = []
        if tokens.refresh_token is None:
            limits.append(tokens.expires_at)  # nothing to renew with: the tokens are the session
        auth_time = claims.get("auth_time")
        if provider.settings.max_session_age and isinstance(auth_time, int | float):
            limits.append(float(auth_time) + provider.settings.max_session_age)
        return limits

    async def _check_iss(self, provider: OIDCProvider, iss: str | None) -> None:
        # RFC 9207: a provider that says it sends "iss" must send its own; a mix-up attack
        # would show another provider's issuer here.
        metadata = await provider.metadata()
        if iss is None:
            if metadata.get("authorization_response_iss_parameter_supported") is True:
                log.warning("callback without iss", extra={"fields": {"provider": provider.name}})
                raise LoginFailed()
            return
        if iss != provider.issuer:
            log.warning("callback iss mismatch", extra={"fields": {"provider": provider.name}})
            raise LoginFailed()

    # --- logout -----------------------------------------------------------------------------

    async def logout(self, record: SessionRecord, cookie_token: str) -> str | None:
        """End an OIDC session here and return the provider's end-session URL, if any."""
        provider = self.source.provider_of(record)
        sealed = record.extra.oidc.tokens if record.extra.oidc else ""
        tokens = self.sessions.open_provider_tokens(cookie_token, record.id, sealed)
        await self.sessions.end(record, "logout")
        if provider is None:
            return None
        if tokens.refresh_token:
            await provider.revoke(tokens.refresh_token)
        return await provider.end_session_url(tokens.id_token)

    async def backchannel_logout(self, logout_token: Any) -> int:
        """Validate a logout token and end exactly the sessions it names; return how many."""
        provider, claims = await self._validate_logout_token(logout_token)
        replay_ttl = LOGOUT_TOKEN_MAX_AGE + 2 * provider.settings.leeway
        jti_key = self.store.key(
            "oidc-jti", provider.issuer_hash, digest("jti:" + str(claims["jti"]))
        )
        if not await self.store.add(jti_key, {"seen": True}, replay_ttl):
            log.warning("logout token replayed", extra={"fields": {"provider": provider.name}})
            raise InvalidLogoutToken()
        sub, sid = claims.get("sub"), claims.get("sid")
        if sid is not None:
            members: list[str] = sorted(await self.store.set_members(self._sid_key(provider, sid)))
            candidates = [await self.sessions.load_by_id(member) for member in members]
        else:
            candidates = list(
                await self.sessions.sessions_of(self.source.subject_for(provider, str(sub)))
            )
        ended = 0
        for record in candidates:
            if record is None or record.method != METHOD:
                continue
            link = record.extra.oidc
            if link is None or link.iss != provider.issuer or link.provider != provider.name:
                continue
            # Both named: both must match, so one user's sid cannot end another user's session.
            if sid is not None and link.sid != sid:
                continue
            if sub is not None and link.sub != sub:
                continue
            if await self.sessions.end(record, "backchannel_logout"):
                ended += 1
        log.info(
            "backchannel logout",
            extra={"fields": {"provider": provider.name, "sessions_ended": ended}},
        )
        return ended

    async def _validate_logout_token(self, token: Any) -> tuple[OIDCProvider, Claims]:
        if not isinstance(token, str) or not token or len(token) > MAX_JWT_LENGTH:
            raise InvalidLogoutToken()
        issuer = _unverified_issuer(token)
        rejected: TokenRejected | None = None
        for provider in self.providers.values():
            if provider.issuer != issuer:
                continue
            try:
                return provider, await provider.validate_logout_token(token)
            except TokenRejected as exc:
                rejected = exc
        log.warning(
            "logout token rejected",
            extra={"fields": {"reason": rejected.reason if rejected else "unknown_issuer"}},
        )
        raise InvalidLogoutToken()


def _unverified_issuer(token: str) -> str | None:
    """Read ``iss`` before verifying, only to pick the provider whose keys will verify it."""
    claims = jose.unverified_claims(token)
    iss = claims.get("iss") if claims is not None else None
    return iss if isinstance(iss, str) else None
