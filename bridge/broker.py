"""The token broker: a session's cached Sentifyd tokens, single flight, and handle chains.

Every first request of a component instance starts a chain with a fresh opaque handle; a
refresh rotates its chain's handle. The store keeps only hashes of handles.

While a session's tokens are fresh, a request changes the record the gate read and writes it
back in one conditional store step (:meth:`SessionManager.update`): no lock, and a request
of the same session that wrote first makes the change run again on what it wrote. Only when
Sentifyd must be called is the session's lock taken, the record re-read under it and the write
fenced by the lock's lease, so concurrent requests of one session share one upstream call
(across instances when the store is shared); its waiters are woken by its release.

Nothing is answered before the record is written, and every write is refused once the session
ended: a request in flight when its session ends gets :class:`SessionGone`, never the tokens.

Beyond ``[session] max_chains`` a new chain evicts the least recently used one: a page view is
never refused for want of room, however many pages a visitor reads in a token's lifetime (the
bridge cannot tell a closed tab from an idle one, and a navigation closes tabs silently). The
record keeps a mark of each evicted chain's current handle (the newest ``MAX_EVICTED``), so a
tab that was only idle presents it once and gets a new chain of the same session, with the same
tokens; a rotated handle replayed on a chain that still exists is theft, as ever.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypedDict

from bridge.errors import (
    InvalidRefreshToken,
    SessionGone,
    StoreUnavailable,
    UpstreamError,
    UpstreamRejected,
)
from bridge.observe import tracing
from bridge.observe.lifecycle import EventName, Lifecycle
from bridge.secret import token_hex, token_urlsafe
from bridge.sessions.manager import (
    AvatarParams,
    Chain,
    Grace,
    SessionBusy,
    SessionContext,
    SessionManager,
    SessionRecord,
    TokenEntry,
    decode_record,
)
from bridge.sessions.sealing import digest, open_with_handle, seal_with_handle
from bridge.settings.schema import AvatarSettings, Settings
from bridge.store.base import Lease, Store
from bridge.upstream.sentifyd import SentifydClient, UpstreamTokens

log = logging.getLogger("bridge.broker")

HANDLE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
MAX_RETIRED = 32
# Evicted chains whose current handle still starts a new chain (8 bytes each in the record).
MAX_EVICTED = 256
MAX_REMEMBERED_FAILURES = 10_000
# Rotations whose write had no known outcome (the store failed twice), remembered in this
# process so that the handle's retry is not taken for a replay: the newest ones, for a day.
MAX_UNRESOLVED = 4_096
UNRESOLVED_FOR = 86_400.0
# Lock-free writes that each met another of the session's writes first; then its lock.
LOCK_FREE_ATTEMPTS = 3

__all__ = ["SessionGone", "TokenAnswer", "TokenBroker"]


class CountRequest(Protocol):
    def __call__(self, record: SessionRecord, *, first: bool) -> None: ...


class Tokens(TypedDict):
    accessToken: str  # noqa: N815 - the component's names
    refreshToken: str  # noqa: N815
    tokenType: str  # noqa: N815
    expiresIn: int  # noqa: N815


class TokenBody(TypedDict):
    """The token endpoint's answer, as the ``<sentifyd-bot>`` component reads it."""

    tokens: Tokens
    avatarParameters: AvatarParams  # noqa: N815


@dataclass(frozen=True)
class TokenAnswer:
    access_token: str
    handle: str
    token_type: str
    expires_in: int
    avatar_params: AvatarParams

    def body(self) -> TokenBody:
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
        *,
        on_cache: Callable[[bool], None] | None = None,
        count_request: CountRequest | None = None,
        before_login: Callable[[AvatarSettings], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.upstream = upstream
        self.lifecycle = lifecycle
        self.clock = clock
        # on_cache(hit): metrics hook.
        self.on_cache = on_cache
        # count_request(record, first=...): counts a token request in the session's record
        # (bridge.access.limits); raises RateLimited beyond a budget.
        self.count_request = count_request
        # before_login(avatar): spends the avatar's upstream login quota (bridge.access.limits).
        self.before_login = before_login
        # "session id:avatar" -> (monotonic time, error) of its last failed upstream fetch, so
        # that requests queued behind a failing call share its failure (in this process) instead
        # of each waiting out a timeout of its own in turn.
        self._failed: dict[str, tuple[float, UpstreamError]] = {}
        # handle hash -> (the hashes it was rotated to, when), for rotations answered 503 whose
        # write may still have been applied: its client never saw the new handle and retries
        # with the old one, which is then a retry, not a theft (in this process only).
        self._unresolved: dict[str, tuple[tuple[str, ...], float]] = {}

    def adopt(self, old: TokenBroker) -> None:
        """Carry ``old``'s in-process memory over (a reload): shared failures and the
        rotations still unresolved stay known to the broker that replaces it."""
        self._failed = old._failed
        self._unresolved = old._unresolved

    async def issue(self, ctx: SessionContext, avatar: AvatarSettings) -> TokenAnswer:
        """Answer a component's first request: tokens plus the handle of a new chain."""
        handle = token_urlsafe(32)
        chain_id = token_hex(6)
        current = digest(handle)

        def add_chain(record: SessionRecord, entry: TokenEntry) -> str:
            if any(c.id == chain_id for c in record.chains):
                return handle  # written already, by a write whose reply was lost
            self._make_room(record)
            record.chains.append(
                Chain(id=chain_id, avatar=avatar.name, current=current, created_at=self.clock())
            )
            return handle

        return await self._serve(ctx, avatar, add_chain, refreshing=False)

    def _make_room(self, record: SessionRecord) -> None:
        """Evict the least recently used chains beyond the cap, so that one more fits."""
        while len(record.chains) >= self.settings.session.max_chains:
            oldest = min(record.chains, key=lambda c: (c.last_used, c.created_at, c.id))
            record.evict(oldest, MAX_EVICTED)

    async def refresh(
        self, ctx: SessionContext, avatar: AvatarSettings, handle: str
    ) -> TokenAnswer:
        """Rotate a chain's handle; replaying a rotated handle past the grace window is theft."""
        if not HANDLE_RE.match(handle):
            raise InvalidRefreshToken()
        handle_hash = digest(handle)
        new_handle = token_urlsafe(32)
        new_hash = digest(new_handle)
        sealed: list[str] = []  # the grace blob, sealed once however often rotate() runs
        unresolved = self._unresolved.get(handle_hash)

        def rotate(record: SessionRecord, entry: TokenEntry) -> str:
            now = self.clock()
            window = self.settings.session.refresh_grace
            for chain in record.chains:
                if chain.grace is not None and now - chain.grace.at > window:
                    chain.grace = None  # past its window it answers nothing: not stored
            for chain in record.chains:
                if chain.current == handle_hash:
                    if chain.avatar != avatar.name:
                        raise InvalidRefreshToken()
                    if not sealed:
                        sealed.append(seal_with_handle(handle, new_handle))
                    chain.spend(handle_hash, MAX_RETIRED)
                    chain.grace = Grace(hash=handle_hash, at=now, sealed=sealed[0])
                    chain.current = new_hash
                    chain.used_at = now
                    return new_handle
                grace = chain.grace
                if grace is not None and grace.hash == handle_hash and now - grace.at <= window:
                    # A duplicate of the same refresh (two tabs woken at once, a retried fetch):
                    # the same answer again, not a theft.
                    repeated = open_with_handle(handle, grace.sealed)
                    if repeated is None or chain.avatar != avatar.name:
                        raise InvalidRefreshToken()
                    return repeated
            for chain in record.chains:
                if unresolved is not None and chain.current in unresolved[0]:
                    # A rotation this process answered 503 was applied after all, and its
                    # handle was never delivered: rotate once more from it, so that the handle
                    # nobody holds is spent and the retry gets a new one.
                    if chain.avatar != avatar.name or not chain.has_spent(handle_hash):
                        raise InvalidRefreshToken()
                    if not sealed:
                        sealed.append(seal_with_handle(handle, new_handle))
                    chain.spend(chain.current, MAX_RETIRED)
                    chain.grace = Grace(hash=handle_hash, at=now, sealed=sealed[0])
                    chain.current = new_hash
                    chain.used_at = now
                    return new_handle
            if any(chain.has_spent(handle_hash) for chain in record.chains):
                raise _HandleReused()
            if not record.take_evicted(avatar.name, handle_hash):
                raise InvalidRefreshToken()
            # The current handle of an evicted chain: its tab was idle, not closed. It goes on
            # as a new chain whose first rotation is this one (a duplicate within the grace
            # window gets the same answer, a replay after it is theft).
            if not sealed:
                sealed.append(seal_with_handle(handle, new_handle))
            self._make_room(record)
            chain = Chain(id=token_hex(6), avatar=avatar.name, current=new_hash, created_at=now)
            chain.spend(handle_hash, MAX_RETIRED)
            chain.grace = Grace(hash=handle_hash, at=now, sealed=sealed[0])
            record.chains.append(chain)
            return new_handle

        try:
            answer = await self._serve(ctx, avatar, rotate, refreshing=True)
            self._unresolved.pop(handle_hash, None)
            return answer
        except StoreUnavailable:
            self._remember_unresolved(handle_hash, new_hash)
            raise
        except _HandleReused:
            record = ctx.record
            await self.lifecycle.emit(
                "refresh_handle_reused",
                user=record.subject,
                session_id=record.id,
                avatar=avatar.name,
            )
            await self.sessions.end(record, "handle_reuse", avatar=avatar.name)
            raise InvalidRefreshToken() from None

    def _remember_unresolved(self, handle_hash: str, new_hash: str) -> None:
        now = self.clock()
        earlier = self._unresolved.pop(handle_hash, None)
        for old, (_, at) in list(self._unresolved.items()):
            if now - at > UNRESOLVED_FOR or len(self._unresolved) >= MAX_UNRESOLVED:
                del self._unresolved[old]  # oldest first: dicts keep insertion order
        # Each unresolved retry may have been applied too: any of them may be the chain's now.
        self._unresolved[handle_hash] = ((earlier[0] if earlier else ()) + (new_hash,), now)

    async def _serve(
        self,
        ctx: SessionContext,
        avatar: AvatarSettings,
        change: Callable[[SessionRecord, TokenEntry], str],
        *,
        refreshing: bool,
    ) -> TokenAnswer:
        """Apply ``change`` (a new chain, a rotation) to the session and answer with the tokens.

        While the session's tokens are fresh this is one conditional write of the record read
        by the gate, and no lock. Only a request that must call Sentifyd takes the session's
        lock (single flight), re-reads the record under it and writes fenced by its lease.
        """
        opened: dict[bytes | str | None, dict[str, TokenEntry]] = {}

        def counted(record: SessionRecord, entry: TokenEntry) -> str:
            # The request that started the session was counted as a new session instead.
            if self.count_request is not None and not ctx.is_new:
                self.count_request(record, first=not refreshing)
            return change(record, entry)

        def cached(record: SessionRecord) -> TokenEntry | None:
            if record.token_blob not in opened:
                opened[record.token_blob] = self.sessions.open_tokens(ctx, record)
            entry = opened[record.token_blob].get(avatar.name)
            return entry if self._fresh(entry, refreshing=refreshing) else None

        def apply(record: SessionRecord, fetched: TokenEntry | None) -> tuple[str, TokenEntry]:
            record.last_seen = self.clock()
            record.claims = dict(ctx.identity.claims)
            entry = cached(record)
            if entry is None:
                if fetched is None:
                    raise _Stale()
                tokens = dict(opened[record.token_blob])
                tokens[avatar.name] = entry = fetched
                self.sessions.seal_tokens(ctx, record, tokens)
            return counted(record, entry), entry

        if cached(ctx.record) is not None:
            try:
                handle, entry = await self.sessions.update(
                    ctx, lambda r: apply(r, None), attempts=LOCK_FREE_ATTEMPTS
                )
            except _Stale:
                pass  # another request's write came first, and its tokens were stale
            except SessionBusy:
                pass  # a flood of this session's requests: queue on its lock instead
            else:
                if self.on_cache:
                    self.on_cache(True)
                return self._answer(entry, handle)

        asked = time.monotonic()
        async with self._locked(ctx.record.id) as lease:
            record = await self.sessions.reload(ctx)
            if cached(record) is None:
                # Refuse what would be refused before any upstream call: a copy, dry-run.
                trial = decode_record(ctx.raw)
                if trial is not None:
                    counted(trial, _NO_TOKENS)
                fetched, event = await self._fetch_tokens(ctx, record, avatar, refreshing, asked)
            else:
                fetched, event = None, None  # another holder fetched them meanwhile
            if self.on_cache:
                self.on_cache(fetched is None)
            handle, entry = await self.sessions.update(
                ctx, lambda r: apply(r, fetched), fence=lease
            )
            if event is not None and entry is fetched:
                # Recorded once saved: tokens that a refused save never handed out leave no event.
                await self.lifecycle.emit(
                    event,
                    user=record.subject,
                    session_id=record.id,
                    avatar=avatar.name,
                    expires_at=round(entry.expires_at),
                    token_hash=digest(entry.access_token)[:16],
                )
            return self._answer(entry, handle)

    @asynccontextmanager
    async def _locked(self, session_id: str) -> AsyncIterator[Lease]:
        """Hold the session's lock; the wait for it is a span of its own."""
        name = self.sessions.lock_name(session_id)
        async with AsyncExitStack() as held:
            with tracing.span("lock.wait"):
                lock = self.store.lock(name, wait=self.settings.store.lock_wait)
                lease = await held.enter_async_context(lock)
            yield lease

    def _fresh(self, entry: TokenEntry | None, *, refreshing: bool = False) -> bool:
        if entry is None:
            return False
        lifetime = entry.expires_at - entry.issued_at
        margin = min(float(self.settings.sentifyd.refresh_margin), lifetime / 4)
        if refreshing:
            # A component refreshes because its token is about to expire; handing it back the
            # same ageing token would only bring it back moments later. Tokens in the first
            # half of their life are newer than anything it holds, and still shared.
            margin = max(margin, lifetime / 2)
        return bool(entry.expires_at - self.clock() > margin)

    async def _fetch_tokens(
        self,
        ctx: SessionContext,
        record: SessionRecord,
        avatar: AvatarSettings,
        refreshing: bool,
        asked: float,
    ) -> tuple[TokenEntry, EventName]:
        """Fetch fresh tokens for ``avatar``; return them and the lifecycle event they owe
        once the record is saved.

        A fetch that failed after this request was ``asked`` (monotonic time), while it waited
        for the session's lock, is this request's failure too.
        """
        key = f"{record.id}:{avatar.name}"
        failed = self._failed.get(key)
        if failed is not None and failed[0] > asked:
            raise failed[1]
        stale = self.sessions.open_tokens(ctx, record).get(avatar.name)
        try:
            fetched = await self._fetch(avatar, stale)
        except UpstreamError as exc:
            if len(self._failed) >= MAX_REMEMBERED_FAILURES:
                self._failed.clear()  # forgetting one only costs a waiter its own attempt
            self._failed[key] = (time.monotonic(), exc)
            raise
        self._failed.pop(key, None)
        entry = TokenEntry(
            access_token=fetched.access_token,
            refresh_token=fetched.refresh_token,
            token_type=fetched.token_type,
            expires_at=fetched.expires_at,
            issued_at=fetched.issued_at,
            avatar_params=fetched.avatar_params,
        )
        return entry, "tokens_refreshed" if refreshing else "tokens_issued"

    async def _fetch(self, avatar: AvatarSettings, entry: TokenEntry | None) -> UpstreamTokens:
        refresh_token = entry.refresh_token if entry is not None else None
        if self.settings.sentifyd.refresh_path and refresh_token:
            try:
                return await self.upstream.refresh(avatar, refresh_token)
            except UpstreamRejected:
                # The upstream refresh is an optimisation; login with the API key always works.
                log.info("sentifyd refused a refresh; logging in again")
        if self.before_login is not None:
            await self.before_login(avatar)
        return await self.upstream.login(avatar)

    def _answer(self, entry: TokenEntry, handle: str) -> TokenAnswer:
        return TokenAnswer(
            access_token=entry.access_token,
            handle=handle,
            token_type=entry.token_type,
            expires_in=max(0, int(entry.expires_at - self.clock())),
            avatar_params=entry.avatar_params,
        )


class _Stale(Exception):
    """The record's tokens are not fresh: only a lock holder may fetch new ones."""


class _HandleReused(Exception):
    """A rotated handle came back past its grace window."""


# Stands in for tokens in a dry run of a change (before an upstream call): never handed out.
_NO_TOKENS = TokenEntry(
    access_token="", refresh_token=None, token_type="", expires_at=0.0, issued_at=0.0
)
