"""The token broker: a session's cached Sentifyd tokens, single flight, and handle chains.

Every first request of a component instance starts a chain with a fresh opaque handle; a
refresh rotates its chain's handle. The store keeps only hashes of handles. Work on a session
happens under that session's lock, re-reading the record once the lock is held, so concurrent
requests of one session share one upstream call (across instances when the store is shared).

Nothing is answered before the record is saved, and a save is fenced by the lock's lease and
refused once the session ended (:meth:`SessionManager.save`): a request in flight when its
session ends gets :class:`SessionGone`, never the tokens.

Beyond ``[session] max_chains`` a new chain replaces the least recently used chain that is no
longer live (its last token expired, plus a slack); while every chain is live, new ones are
refused with 429, so a flood of first requests never breaks an open tab.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge.errors import (
    InvalidRefreshToken,
    RateLimited,
    SessionGone,
    UpstreamError,
    UpstreamRejected,
)
from bridge.lifecycle import Lifecycle
from bridge.sealing import digest, open_with_handle, seal_with_handle
from bridge.sentifyd import SentifydClient, UpstreamTokens
from bridge.sessions import Chain, SessionContext, SessionManager, SessionRecord
from bridge.settings import AvatarSettings, Settings
from bridge.store.base import Lease, Store

log = logging.getLogger("bridge.broker")

HANDLE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
MAX_RETIRED = 32
MAX_REMEMBERED_FAILURES = 10_000
# A tab refreshes when its token expires; a hidden tab's timers may run a minute late.
CHAIN_SLACK = 120.0

__all__ = ["SessionGone", "TokenAnswer", "TokenBroker"]


@dataclass(frozen=True)
class TokenAnswer:
    access_token: str
    handle: str
    token_type: str
    expires_in: int
    avatar_params: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {
            "tokens": {
                "accessToken": self.access_token,
                "refreshToken": self.handle,
                "tokenType": self.token_type,
                "expiresIn": self.expires_in,
            },
            "avatarParameters": self.avatar_params,
        }

    def __repr__(self) -> str:
        return f"TokenAnswer(expires_in={self.expires_in})"


class TokenBroker:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        sessions: SessionManager,
        upstream: SentifydClient,
        lifecycle: Lifecycle,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.upstream = upstream
        self.lifecycle = lifecycle
        self.clock = clock
        # cache_hit(bool): metrics hook.
        self.on_cache: Callable[[bool], None] | None = None
        # on_limited(scope): metrics hook, called when a new tab is refused (all tabs live).
        self.on_limited: Callable[[str], None] | None = None
        # before_login(avatar): spends the avatar's upstream login quota (bridge.limits).
        self.before_login: Callable[[AvatarSettings], Awaitable[None]] | None = None
        # "session id:avatar" -> (monotonic time, error) of its last failed upstream fetch, so
        # that requests queued behind a failing call share its failure (in this process) instead
        # of each waiting out a timeout of its own in turn.
        self._failed: dict[str, tuple[float, UpstreamError]] = {}

    async def issue(self, ctx: SessionContext, avatar: AvatarSettings) -> TokenAnswer:
        """Answer a component's first request: tokens plus the handle of a new chain."""
        asked = time.monotonic()
        async with self.store.lock(
            self.sessions.lock_name(ctx.record.id), wait=self.settings.store.lock_wait
        ) as lease:
            record = await self._reload(ctx)
            self._make_room(record)  # before any upstream call: a refused tab costs nothing
            entry, fetched = await self._tokens(ctx, record, avatar, asked=asked)
            handle = secrets.token_urlsafe(32)
            now = self.clock()
            record.chains.append(
                Chain(
                    id=secrets.token_hex(6),
                    avatar=avatar.name,
                    current=digest(handle),
                    created_at=now,
                    live_until=self._live_until(entry),
                )
            )
            await self._commit(record, lease, fetched)
            return self._answer(entry, handle)

    def _make_room(self, record: SessionRecord) -> None:
        """Drop idle chains beyond the cap; refuse (429) when only live ones would make room."""
        cap = self.settings.session.max_chains
        if len(record.chains) < cap:
            return
        now = self.clock()
        idle = sorted((c for c in record.chains if c.live_until <= now), key=lambda c: c.live_until)
        excess = len(record.chains) - cap + 1
        if len(idle) < excess:
            soonest = min(c.live_until for c in record.chains)
            if self.on_limited:
                self.on_limited("tabs")
            raise RateLimited(max(1, math.ceil(soonest - now)))
        dropped = {c.id for c in idle[:excess]}
        record.chains = [c for c in record.chains if c.id not in dropped]

    def _live_until(self, entry: dict[str, Any]) -> float:
        lifetime = float(entry["exp"] - entry["iat"])
        return float(entry["exp"]) + max(CHAIN_SLACK, lifetime)

    async def refresh(
        self, ctx: SessionContext, avatar: AvatarSettings, handle: str
    ) -> TokenAnswer:
        """Rotate a chain's handle; replaying a rotated handle past the grace window is theft."""
        if not HANDLE_RE.match(handle):
            raise InvalidRefreshToken()
        handle_hash = digest(handle)
        asked = time.monotonic()
        async with self.store.lock(
            self.sessions.lock_name(ctx.record.id), wait=self.settings.store.lock_wait
        ) as lease:
            record = await self._reload(ctx)
            now = self.clock()
            for chain in record.chains:
                if chain.current == handle_hash:
                    if chain.avatar != avatar.name:
                        raise InvalidRefreshToken()
                    entry, fetched = await self._tokens(
                        ctx, record, avatar, refreshing=True, asked=asked
                    )
                    new_handle = secrets.token_urlsafe(32)
                    chain.retired = [*chain.retired, handle_hash][-MAX_RETIRED:]
                    chain.grace = {
                        "hash": handle_hash,
                        "at": now,
                        "sealed": seal_with_handle(handle, new_handle),
                    }
                    chain.current = digest(new_handle)
                    chain.live_until = self._live_until(entry)
                    await self._commit(record, lease, fetched)
                    return self._answer(entry, new_handle)
                grace = chain.grace
                if (
                    grace
                    and grace["hash"] == handle_hash
                    and now - grace["at"] <= self.settings.session.refresh_grace
                ):
                    # A duplicate of the same refresh (two tabs woken at once, a retried fetch):
                    # the same answer again, not a theft.
                    repeated = open_with_handle(handle, grace["sealed"])
                    if repeated is None or chain.avatar != avatar.name:
                        raise InvalidRefreshToken()
                    entry, fetched = await self._tokens(
                        ctx, record, avatar, refreshing=True, asked=asked
                    )
                    chain.live_until = self._live_until(entry)
                    await self._commit(record, lease, fetched)
                    return self._answer(entry, repeated)
                if handle_hash in chain.retired:
                    await self.lifecycle.emit(
                        "refresh_handle_reused",
                        user=record.subject,
                        session_id=record.id,
                        avatar=avatar.name,
                    )
                    await self.sessions.end(record, "handle_reuse", avatar=avatar.name)
                    raise InvalidRefreshToken()
            raise InvalidRefreshToken()

    async def _commit(
        self, record: SessionRecord, lease: Lease, fetched: dict[str, Any] | None
    ) -> None:
        """Save the record (fenced; refused once the session ended), then record any new
        tokens: tokens that a save refused were never handed out, so they are not recorded."""
        await self.sessions.save(record, fence=lease)
        if fetched is not None:
            await self.lifecycle.emit(
                fetched.pop("event"), user=record.subject, session_id=record.id, **fetched
            )

    async def _reload(self, ctx: SessionContext) -> SessionRecord:
        record = await self.sessions.load_by_id(ctx.record.id)
        if record is None:
            raise SessionGone()
        record.last_seen = self.clock()
        record.claims = dict(ctx.identity.claims)
        ctx.record = record
        return record

    def _fresh(self, entry: dict[str, Any] | None, *, refreshing: bool = False) -> bool:
        if not entry:
            return False
        lifetime = entry["exp"] - entry["iat"]
        margin = min(float(self.settings.sentifyd.refresh_margin), lifetime / 4)
        if refreshing:
            # A component refreshes because its token is about to expire; handing it back the
            # same ageing token would only bring it back moments later. Tokens in the first
            # half of their life are newer than anything it holds, and still shared.
            margin = max(margin, lifetime / 2)
        return bool(entry["exp"] - self.clock() > margin)

    async def _tokens(
        self,
        ctx: SessionContext,
        record: SessionRecord,
        avatar: AvatarSettings,
        *,
        refreshing: bool = False,
        asked: float = float("inf"),
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Return the session's cached tokens for ``avatar``, fetching them if stale, and the
        lifecycle event a fetch owes once the record is saved (None for a cache hit).

        A fetch that failed after this request was ``asked`` (monotonic time), while it waited
        for the session's lock, is this request's failure too.
        """
        tokens = self.sessions.open_tokens(ctx, record)
        entry = tokens.get(avatar.name)
        if self._fresh(entry, refreshing=refreshing):
            if self.on_cache:
                self.on_cache(True)
            return dict(entry), None  # type: ignore[arg-type]
        if self.on_cache:
            self.on_cache(False)
        key = f"{record.id}:{avatar.name}"
        failed = self._failed.get(key)
        if failed is not None and failed[0] > asked:
            raise failed[1]
        try:
            fetched = await self._fetch(ctx, record, avatar, entry)
        except UpstreamError as exc:
            if len(self._failed) >= MAX_REMEMBERED_FAILURES:
                self._failed.clear()  # forgetting one only costs a waiter its own attempt
            self._failed[key] = (time.monotonic(), exc)
            raise
        self._failed.pop(key, None)
        entry = {
            "at": fetched.access_token,
            "rt": fetched.refresh_token,
            "tt": fetched.token_type,
            "exp": fetched.expires_at,
            "iat": fetched.issued_at,
            "params": fetched.avatar_params,
        }
        tokens[avatar.name] = entry
        self.sessions.seal_tokens(ctx, record, tokens)
        event = {
            "event": "tokens_refreshed" if refreshing else "tokens_issued",
            "avatar": avatar.name,
            "expires_at": round(fetched.expires_at),
            "token_hash": digest(fetched.access_token)[:16],
        }
        return entry, event

    async def _fetch(
        self,
        ctx: SessionContext,
        record: SessionRecord,
        avatar: AvatarSettings,
        entry: dict[str, Any] | None,
    ) -> UpstreamTokens:
        refresh_token = entry.get("rt") if entry else None
        if self.settings.sentifyd.refresh_path and refresh_token:
            try:
                return await self.upstream.refresh(avatar, refresh_token)
            except UpstreamRejected:
                # The upstream refresh is an optimisation; login with the API key always works.
                log.info("sentifyd refused a refresh; logging in again")
        if self.before_login is not None:
            await self.before_login(avatar)
        return await self.upstream.login(avatar)

    def _answer(self, entry: dict[str, Any], handle: str) -> TokenAnswer:
        return TokenAnswer(
            access_token=entry["at"],
            handle=handle,
            token_type=entry["tt"],
            expires_in=max(0, int(entry["exp"] - self.clock())),
            avatar_params=entry["params"],
        )
