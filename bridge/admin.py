"""What an operator may see and do: list sessions, read a user's events, revoke sessions.

Shared by the admin API (:mod:`bridge.routes.admin`) and the CLI. A session is shown by its
id (a hash of the cookie, useless to a thief), its user, timestamps, the avatars its tabs use
and whether it holds Sentifyd tokens: never a token, a handle or its hash, nor the record's
``extra`` (a way in may keep provider data there).
"""

from __future__ import annotations

import re
from typing import TypedDict

from bridge.identity import Claims
from bridge.lifecycle import Event, Lifecycle
from bridge.sessions import SessionManager, SessionRecord
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


class Admin:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        sessions: SessionManager,
        lifecycle: Lifecycle,
        *,
        actor: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.lifecycle = lifecycle
        # Recorded on the session_ended events this admin causes ("admin_api", "cli").
        self.actor = actor

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
        return {
            "user": user,
            "sessions": [self.view(r) for r in records],
            "events": await self.lifecycle.recent(user, events),
            "blocked_until": await self.sessions.blocked_until(user),
        }

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
        return {"sessions": page, "next_cursor": next_cursor}

    async def revoke_user(self, user: str, *, block: int) -> UserRevoked:
        """End all of a user's sessions and, with ``block`` > 0, refuse new ones for a while."""
        # Block first, so that no new session can start between the ending and the block.
        blocked_until = await self.sessions.block(user, block) if block > 0 else None
        ended = 0
        for record in await self.sessions.sessions_of(user):
            if await self.revoke_session(record.id):
                ended += 1
        return {"user": user, "ended": ended, "blocked_until": blocked_until}

    async def revoke_session(self, session_id: str) -> bool:
        """End one session; tell whether it existed.

        Without waiting for the session's lock: a token request in flight cannot save the
        session back once it has ended (see :mod:`bridge.sessions`).
        """
        record = await self.sessions.load_by_id(session_id)
        if record is None:
            return False
        return await self.sessions.end(record, "admin_revoked", by=self.actor)

    async def _all_session_ids(self) -> list[str]:
        ids = []
        async for key in self.store.scan(self.store.session_key("session", "*")):
            session_id = self.store.session_of("session", key)
            if session_id is not None and SESSION_ID_RE.match(session_id):
                ids.append(session_id)
        return ids
