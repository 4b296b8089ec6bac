"""The bridge's own session: a random cookie value in the browser, a record in the store.

The cookie value is 256 random bits. The store knows the session only by a hash of it, so a
store dump yields no usable cookie, and the value also keys the sealing of the session's
upstream tokens (:mod:`bridge.sealing`).

Ending a session always wins: :meth:`SessionManager.end` leaves a tombstone and deletes the
record in one atomic step, without waiting for the session's lock, and every save checks the
tombstone (and that the record still exists, and the saver's lease) in the same step as its
write. A request that was in flight when the session ended finds its save refused
(:class:`SessionGone`) and hands out nothing.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from quart import Request, Response, g, has_request_context

from bridge.errors import SessionGone, SessionRevoked
from bridge.identity import Identity
from bridge.lifecycle import Lifecycle
from bridge.sealing import SessionSealer, digest
from bridge.settings import Settings
from bridge.store.base import Lease, Store

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass
class Chain:
    """One component instance's line of refresh handles (stored as hashes only).

    ``live_until`` is when the access token last handed to it expires, plus a slack for
    throttled background tabs: until then the chain may be refreshed, so it is never evicted.
    """

    id: str
    avatar: str
    current: str
    created_at: float
    retired: list[str] = field(default_factory=list)
    grace: dict[str, Any] | None = None
    live_until: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "avatar": self.avatar,
            "current": self.current,
            "created_at": self.created_at,
            "retired": list(self.retired),
            "grace": dict(self.grace) if self.grace is not None else None,
            "live_until": self.live_until,
        }


@dataclass
class SessionRecord:
    id: str
    subject: str
    method: str
    claims: dict[str, Any]
    created_at: float
    last_seen: float
    expires_at: float
    tokens: str | None = None
    chains: list[Chain] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict, whose deep copy was a fifth of the token
        # endpoint's time; the containers are copied, so the result aliases nothing mutable
        # that the record changes later.
        return {
            "id": self.id,
            "subject": self.subject,
            "method": self.method,
            "claims": dict(self.claims),
            "created_at": self.created_at,
            "last_seen": self.last_seen,
            "expires_at": self.expires_at,
            "tokens": self.tokens,
            "chains": [chain.to_dict() for chain in self.chains],
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionRecord:
        chains = [Chain(**c) for c in data.get("chains", [])]
        return cls(**{**data, "chains": chains})

    def identity(self) -> Identity:
        return Identity(subject=self.subject, method=self.method, claims=dict(self.claims))


@dataclass
class SessionContext:
    """A request's view of its session: the record and the cookie value that keys it."""

    record: SessionRecord
    cookie_token: str
    identity: Identity
    is_new: bool = False


class SessionManager:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        lifecycle: Lifecycle,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.lifecycle = lifecycle
        self.clock = clock
        self.sealer = SessionSealer(settings.secret_keys)
        self.cookie_name = settings.session.effective_cookie_name
        # Called with each record that end() ended: a way in drops its own indexes of it.
        self.on_end: list[Callable[[SessionRecord], Awaitable[None]]] = []

    # --- cookie ---------------------------------------------------------------------------

    def cookie_token(self, request: Request) -> str | None:
        value = request.cookies.get(self.cookie_name)
        if value and _TOKEN_RE.match(value):
            return value
        return None

    def set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            self.cookie_name,
            token,
            max_age=self.settings.session.absolute_timeout,
            path=self.settings.session.cookie_path,
            secure=self.settings.session.cookie_secure,
            httponly=True,
            samesite="Lax",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            self.cookie_name,
            path=self.settings.session.cookie_path,
            secure=self.settings.session.cookie_secure,
            httponly=True,
            samesite="Lax",
        )

    # --- records --------------------------------------------------------------------------

    @staticmethod
    def session_id(token: str) -> str:
        return digest("session:" + token)[:32]

    def record_key(self, session_id: str) -> str:
        return self.store.session_key("session", session_id)

    def user_key(self, subject: str) -> str:
        return self.store.key("user", subject)

    def lock_name(self, session_id: str) -> str:
        return self.store.session_key("lock", session_id)

    def tombstone_key(self, session_id: str) -> str:
        return self.store.session_key("ended", session_id)

    async def load(self, token: str) -> SessionRecord | None:
        """Return the live record for a cookie value; end it here if it timed out."""
        data = await self.store.get(self.record_key(self.session_id(token)))
        if data is None:
            return None
        record = SessionRecord.from_dict(data)
        now = self.clock()
        if now >= record.expires_at:
            await self.end(record, "absolute_timeout")
            return None
        if now - record.last_seen >= self.settings.session.idle_timeout:
            await self.end(record, "idle_timeout")
            return None
        return record

    async def load_by_id(self, session_id: str) -> SessionRecord | None:
        data = await self.store.get(self.record_key(session_id))
        return SessionRecord.from_dict(data) if data is not None else None

    async def create(
        self, identity: Identity, extra: dict[str, Any] | None = None
    ) -> SessionContext:
        """Start a session with a fresh id (never reuse one across identities: no fixation).

        Beyond ``[limits] sessions_per_user`` live sessions, the user's oldest end (``evicted``).
        """
        if await self.blocked_until(identity.subject) is not None:
            raise SessionRevoked()
        token = secrets.token_urlsafe(32)
        now = self.clock()
        record = SessionRecord(
            id=self.session_id(token),
            subject=identity.subject,
            method=identity.method,
            claims=dict(identity.claims),
            created_at=now,
            last_seen=now,
            expires_at=now + self.settings.session.absolute_timeout,
            extra=dict(extra or {}),
        )
        await self.save(record, create=True)
        await self.store.set_add(
            self.user_key(record.subject), record.id, self.settings.session.absolute_timeout
        )
        if has_request_context():
            g.session_id = record.id  # the request log names the session it started
        await self.lifecycle.emit(
            "session_started", user=record.subject, session_id=record.id, method=record.method
        )
        if await self.blocked_until(identity.subject) is not None:
            # An admin revoke landed meanwhile: it blocks first, then ends what the user's
            # index lists, which may have been just before this session was added to it.
            await self.end(record, "admin_revoked")
            raise SessionRevoked()
        await self._evict_beyond_cap(record)
        return SessionContext(record=record, cookie_token=token, identity=identity, is_new=True)

    async def _evict_beyond_cap(self, new: SessionRecord) -> None:
        cap = self.settings.limits.sessions_per_user
        if cap <= 0:
            return
        live = await self.sessions_of(new.subject)
        if len(live) <= cap:
            return
        # Oldest first; instances racing here pick the same ones, and ending twice is harmless.
        older = sorted((r for r in live if r.id != new.id), key=lambda r: (r.created_at, r.id))
        for record in older[: len(live) - cap]:
            await self.end(record, "evicted")

    def ttl(self, record: SessionRecord) -> float:
        now = self.clock()
        return max(1.0, min(float(self.settings.session.idle_timeout), record.expires_at - now))

    def tombstone_ttl(self) -> float:
        # Longer than any request in flight can take: a record lives at most idle_timeout
        # without a write, and every write checks the tombstone.
        return float(self.settings.session.idle_timeout)

    async def save(
        self, record: SessionRecord, *, fence: Lease | None = None, create: bool = False
    ) -> None:
        """Write the record back; raise SessionGone if it ended meanwhile (nothing is written).

        With ``fence`` (the session's lock, held), a lease that lapsed raises LeaseLost.
        """
        written = await self.store.put_record(
            self.record_key(record.id),
            record.to_dict(),
            self.ttl(record),
            tombstone=self.tombstone_key(record.id),
            fence=fence,
            create=create,
        )
        if not written:
            raise SessionGone()

    async def end(self, record: SessionRecord, reason: str, **fields: Any) -> bool:
        """End the session now, whatever is in flight: tombstone it, delete the record (and
        with it the sealed Sentifyd tokens), drop it from the user's index and record why.

        Tell whether it was still live (an ending already done is not recorded twice).
        """
        ended = await self.store.end_record(
            self.record_key(record.id), self.tombstone_key(record.id), self.tombstone_ttl()
        )
        if has_request_context():
            g.session_ended = True  # the response clears this visitor's cookie
        await self.store.set_remove(self.user_key(record.subject), record.id)
        for forget in self.on_end:
            await forget(record)
        if ended:
            await self.lifecycle.emit(
                "session_ended", user=record.subject, session_id=record.id, reason=reason, **fields
            )
        return ended

    async def sessions_of(self, subject: str) -> list[SessionRecord]:
        records = []
        for session_id in sorted(await self.store.set_members(self.user_key(subject))):
            record = await self.load_by_id(session_id)
            if record is None:
                await self.store.set_remove(self.user_key(subject), session_id)
            else:
                records.append(record)
        return records

    # --- revocation ---------------------------------------------------------------------------

    def block_key(self, subject: str) -> str:
        return self.store.key("blocked", subject)

    async def block(self, subject: str, seconds: int) -> float:
        """Refuse new sessions to ``subject`` for ``seconds``; return when the block ends.

        Ending a user's sessions alone would not stop them: their site login is still valid,
        so the next token request would start a fresh session.
        """
        until = self.clock() + seconds
        await self.store.set(self.block_key(subject), {"until": until}, seconds)
        return until

    async def blocked_until(self, subject: str) -> float | None:
        data = await self.store.get(self.block_key(subject))
        # The store's TTL uses the real clock; the until check keeps a test clock honest.
        if data is None or float(data.get("until", 0)) <= self.clock():
            return None
        return float(data["until"])

    async def unblock(self, subject: str) -> None:
        await self.store.delete(self.block_key(subject))

    # --- sealed tokens ----------------------------------------------------------------------

    def open_tokens(self, ctx: SessionContext, record: SessionRecord) -> dict[str, Any]:
        if not record.tokens:
            return {}
        return self.sealer.open(ctx.cookie_token, record.id, record.tokens) or {}

    def seal_tokens(
        self, ctx: SessionContext, record: SessionRecord, tokens: dict[str, Any]
    ) -> None:
        record.tokens = self.sealer.seal(ctx.cookie_token, record.id, tokens) if tokens else None
