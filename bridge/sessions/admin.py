"""What an operator may see and do: list sessions, read a user's events, revoke sessions.

Shared by the admin API (:mod:`bridge.web.routes.admin`), the operator console
(:mod:`bridge.web.routes.console`) and the CLI. Every action is recorded in the audit trail with
the operator's name (:mod:`bridge.sessions.audit`), and the sessions it ends name them too.

A session is shown by its id (a hash of the cookie, useless to a thief), its user, timestamps,
the avatars its tabs use and whether it holds Sentifyd tokens: never a token, a handle or its
hash, nor the record's ``extra`` (a way in may keep provider data there).
"""

from __future__ import annotations

import re
from typing import Protocol, TypedDict

from bridge.identity import Claims
from bridge.observe.lifecycle import Event, Lifecycle
from bridge.sessions.audit import Audit, AuditEntry, Operator
from bridge.sessions.manager import SessionManager, SessionRecord
from bridge.settings.schema import Settings
from bridge.store.base import Store

SESSION_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_PAGE = 500
MAX_USER_LENGTH = 256


class SessionView(TypedDict):
    """What an operator sees of one session."""

    id: str
    user: str
    method: str
    created_at: float
    last_seen: float
    idle_expires_at: float
    expires_at: float
    avatars: list[str]
    tabs: int
    has_tokens: bool
    claims: Claims


class UserView(TypedDict):
    user: str
    sessions: list[SessionView]
    events: list[Event]
    blocked_until: float | None


class SessionPage(TypedDict):
    sessions: list[SessionView]
    next_cursor: str | None


class UserRevoked(TypedDict):
    user: str
    ended: int
    blocked_until: float | None


class UserUnblocked(TypedDict):
    user: str
    blocked_until: None


class Parts(Protocol):
    """What the operations use of the running bridge (:class:`bridge.wiring.Bridge` has them)."""

    settings: Settings
    store: Store
    sessions: SessionManager
    lifecycle: Lifecycle
    audit: Audit


class Admin:
    """The operations of one operator, each recorded in the audit trail as theirs."""

    def __init__(self, bridge: Parts, operator: Operator) -> None:
        self.settings = bridge.settings
        self.store = bridge.store
        self.sessions = bridge.sessions
        self.lifecycle = bridge.lifecycle
        self.audit = bridge.audit
        self.operator = operator

    def view(self, record: SessionRecord) -> SessionView:
        """Return what an operator may see of a session."""
        return {
            "id": record.id,
            "user": record.subject,
            "method": record.method,
            "created_at": round(record.created_at, 3),
            "last_seen": round(record.last_seen, 3),
            "idle_expires_at": round(
                min(record.last_seen + self.settings.session.idle_timeout, record.expires_at), 3
            ),
            "expires_at": round(record.expires_at, 3),
            "avatars": sorted({chain.avatar for chain in record.chains}),
            "tabs": len(record.chains),
            "has_tokens": record.has_tokens,
            "claims": dict(record.claims),
        }

    async def user(self, user: str, *, events: int = 50) -> UserView:
        """Return a user's live sessions, recent events (newest first) and any block."""
        records = await self.sessions.sessions_of(user)
        view: UserView = {
            "user": user,
            "sessions": [self.view(r) for r in records],
            "events": await self.lifecycle.recent(user, events),
            "blocked_until": await self.sessions.blocked_until(user),
        }
        await self.audit.record(self.operator, "show_user", user=user)
        return view

    async def events(self, user: str, limit: int) -> list[Event]:
        """Return a user's recent lifecycle events, newest first."""
        events = await self.lifecycle.recent(user, limit)
        await self.audit.record(self.operator, "read_events", user=user)
        return events

    async def audit_trail(
        self, limit: int, *, user: str | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        """Return the newest audit entries (of ``user``, by ``actor``); reading is recorded."""
        entries = await self.audit.recent(limit, user=user, actor=actor)
        await self.audit.record(self.operator, "read_audit", user=user)
        return entries

    async def list_sessions(
        self,
        *,
        user: str | None = None,
        avatar: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> SessionPage:
        """Return one page of sessions ordered by id, and the cursor of the next page."""
        if user is not None:
            ids = sorted(r.id for r in await self.sessions.sessions_of(user))
        else:
            ids = sorted(await self._all_session_ids())
        page: list[SessionView] = []
        next_cursor = None
        for session_id in ids:
            if cursor is not None and session_id <= cursor:
                continue
            record = await self.sessions.load_by_id(session_id)
            if record is None:
                continue
            if avatar is not None and all(c.avatar != avatar for c in record.chains):
                continue
            if len(page) == limit:
                next_cursor = page[-1]["id"]
                break
            page.append(self.view(record))
        await self.audit.record(self.operator, "list_sessions", user=user)
        return {"sessions": page, "next_cursor": next_cursor}

    async def revoke_user(self, user: str, *, block: int) -> UserRevoked:
        """End all of a user's sessions and, with ``block`` > 0, refuse new ones for a while."""
        # Block first, so that no new session can start between the ending and the block.
        blocked_until = await self.sessions.block(user, block) if block > 0 else None
        ended = 0
        for record in await self.sessions.sessions_of(user):
            if await self._end(record):
                ended += 1
        await self.audit.record(
            self.operator,
            "revoke_user",
            user=user,
            ended=ended,
            block=block,
            blocked_until=blocked_until,
        )
        return {"user": user, "ended": ended, "blocked_until": blocked_until}

    async def unblock(self, user: str) -> UserUnblocked:
        """Lift a block that :meth:`revoke_user` set (done, whether or not there was one)."""
        await self.sessions.unblock(user)
        await self.audit.record(self.operator, "unblock_user", user=user)
        return {"user": user, "blocked_until": None}

    async def revoke_session(self, session_id: str, *, user: str | None = None) -> bool:
        """End one session (only if it is ``user``'s, when given); tell whether it existed.

        Without waiting for the session's lock: a token request in flight cannot save the
        session back once it has ended (see :mod:`bridge.sessions.manager`).
        """
        record = await self.sessions.load_by_id(session_id)
        if record is not None and user is not None and record.subject != user:
            record = None  # a form for one user's page never ends another's session
        ended = record is not None and await self._end(record)
        await self.audit.record(
            self.operator,
            "revoke_session",
            outcome="ok" if ended else "not_found",
            user=record.subject if record is not None else user,
            session=session_id,
        )
        return ended

    async def _end(self, record: SessionRecord) -> bool:
        # by: how (admin_api, console, cli), as before; actor: who.
        return await self.sessions.end(
            record, "admin_revoked", by=self.operator.via, actor=self.operator.name
        )

    async def _all_session_ids(self) -> list[str]:
        ids = []
        async for key in self.store.scan(self.store.session_key("session", "*")):
            session_id = self.store.session_of("session", key)
            if session_id is not None and SESSION_ID_RE.match(session_id):
                ids.append(session_id)
        return ids
