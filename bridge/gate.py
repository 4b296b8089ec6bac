"""Who is this, and may they? Resolve the visitor's identity, their bridge session and their
right to an avatar, in that order, for the token endpoint and the pages alike.

The gate is also where anonymous work is counted per client address: a visitor it cannot
recognise (or may not admit) counts, and beyond the limit gets 429 instead of 401/403; a
recognised, admitted one never counts and is never refused per address, however many share it.
Only where recognising a visitor costs a call to another server (the site's "who am I" URL)
is an address over its limit refused before that call, unless it brings a live bridge session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.access.limits import RateLimiter
from bridge.access.rules import is_allowed
from bridge.errors import Forbidden, LoginEnded, LoginRequired
from bridge.identity import Identity, Method
from bridge.observe import tracing
from bridge.observe.incoming import Incoming
from bridge.observe.lifecycle import Lifecycle
from bridge.sessions.manager import SessionContext, SessionManager, SessionRecord
from bridge.settings.schema import AvatarSettings


class IdentitySource(Protocol):
    """A way in. ``identify`` returns None when this source does not recognise the visitor.

    ``remote`` says whether recognising a visitor asks another server (the site's "who am I"
    URL): anonymous floods are then held per address before that call, not only after it.
    """

    method: Method
    remote: bool

    async def identify(self, request: Incoming, record: SessionRecord | None) -> Identity | None:
        """Recognise the visitor from the request (and, for sessions a login made, the record)."""

    def login_url(self, next_path: str) -> str: ...


@dataclass
class Visitor:
    """What the gate learned: the identity (or None), the live session (or None), and whether
    an old session was ended on the way (so the response should clear its cookie)."""

    identity: Identity | None
    record: SessionRecord | None
    cookie_token: str | None
    ended: bool = False
    raw: bytes = b""  # the record as stored (what a write of it expects to find)


class Gate:
    def __init__(
        self,
        sessions: SessionManager,
        sources: Sequence[IdentitySource],
        lifecycle: Lifecycle,
        limiter: RateLimiter,
    ) -> None:
        self.sessions = sessions
        self.sources = list(sources)
        self.lifecycle = lifecycle
        self.limiter = limiter

    def login_url(self, next_path: str) -> str | None:
        for source in self.sources:
            return source.login_url(next_path)
        return None

    async def identify(self, request: Incoming) -> Visitor:
        """Find the visitor's identity and live session; end a session whose login is gone."""
        with tracing.span("identity"):
            return await self._identify(request)

    async def _identify(self, request: Incoming) -> Visitor:
        token = self.sessions.cookie_token(request)
        loaded = await self.sessions.load_raw(token) if token else None
        record, raw = loaded if loaded is not None else (None, b"")
        if record is None and any(source.remote for source in self.sources):
            await self.limiter.check_address(request)
        identity: Identity | None = None
        # Ask the way in that made the session first, so a second login method the visitor
        # also has (say, a site cookie beside an SSO session) does not end it.
        sources = sorted(self.sources, key=lambda s: record is None or s.method != record.method)
        end_reason = "site_logout"
        for source in sources:
            try:
                identity = await source.identify(request, record)
            except LoginEnded as exc:
                identity, end_reason = None, exc.reason
                continue
            if identity is not None:
                break
        ended = False
        if record is not None and (
            identity is None
            or identity.subject != record.subject
            or identity.method != record.method
        ):
            # The site says the visitor logged out, or is now someone else: the avatar stops.
            await self.sessions.end(record, end_reason)
            record, ended = None, True
        if identity is None:
            await self.limiter.count_anonymous(request)
        return Visitor(
            identity=identity,
            record=record,
            cookie_token=token if record else None,
            ended=ended,
            raw=raw if record else b"",
        )

    async def admit(
        self, request: Incoming, avatar: AvatarSettings, *, next_path: str, create: bool = True
    ) -> tuple[Visitor, SessionContext | None]:
        """Admit a visitor to ``avatar``'s tokens: 401 if unknown, 403 if not allowed.

        With ``create`` the visitor gets a fresh session when they have none (429 beyond
        ``new_sessions_per_user``); without it (a refresh, which must name an existing
        session) they get None.
        """
        visitor = await self.identify(request)
        if visitor.identity is None:
            raise LoginRequired(self.login_url(next_path))
        if not is_allowed(avatar.allow, visitor.identity):
            await self.limiter.count_anonymous(request)
            await self.lifecycle.emit(
                "access_denied",
                user=visitor.identity.subject,
                session_id=visitor.record.id if visitor.record else None,
                avatar=avatar.name,
            )
            raise Forbidden()
        if visitor.record is not None and visitor.cookie_token is not None:
            return visitor, SessionContext(
                visitor.record, visitor.cookie_token, visitor.identity, raw=visitor.raw
            )
        if not create:
            return visitor, None
        # The per-user limits are the session manager's, the same for every way in.
        return visitor, await self.sessions.create(visitor.identity)
