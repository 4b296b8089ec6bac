"""The audit trail: which operator did what, to whom, when, and how it ended.

Every admin action (through the admin API, the operator console or the CLI) is one
:class:`AuditEntry`, kept in one capped list in the store (``[admin] audit_max_entries``
newest, for ``[admin] audit_retention`` seconds after the last one: the mechanism of a user's
lifecycle events) and logged as one JSON line (logger ``bridge.audit``). An entry names its
target by user id and by the hashed session id the admin API shows, never by a cookie, a token or a
handle. A request that names no operator (a wrong or missing admin token) is logged only: it
has no actor to record, and letting anyone append to the list would let anyone push the real
entries out of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

import msgspec

from bridge.settings.schema import AdminSettings
from bridge.store.base import Store

Via = Literal["admin_api", "console", "cli"]
Action = Literal[
    "show_user",
    "list_sessions",
    "read_events",
    "read_audit",
    "revoke_session",
    "revoke_user",
    "unblock_user",
    "console_sign_in",
    "console_sign_out",
]
Outcome = Literal["ok", "not_found"]

log = logging.getLogger("bridge.audit")


class Operator(msgspec.Struct, frozen=True):
    """Who acts: the name of their admin token (or, on the CLI, of their account), and how."""

    name: str
    via: Via


class AuditEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """One admin action. Read back leniently: entries of later versions may carry more."""

    time: float
    actor: str
    via: str
    action: str
    outcome: str
    user: str | None = None
    session: str | None = None  # the hashed session id (as in lifecycle events), never a cookie
    ended: int | None = None  # revoke_user: how many sessions it ended
    block: int | None = None  # revoke_user: the block asked for, in seconds
    blocked_until: float | None = None


class Audit:
    def __init__(
        self, store: Store, settings: AdminSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.retention = settings.audit_retention
        self.max_entries = settings.audit_max_entries
        self.clock = clock

    @property
    def key(self) -> str:
        return self.store.key("audit")

    async def record(
        self,
        operator: Operator,
        action: Action,
        *,
        outcome: Outcome = "ok",
        user: str | None = None,
        session: str | None = None,
        ended: int | None = None,
        block: int | None = None,
        blocked_until: float | None = None,
    ) -> AuditEntry:
        """Keep one entry and log it."""
        entry = AuditEntry(
            time=round(self.clock(), 3),
            actor=operator.name,
            via=operator.via,
            action=action,
            outcome=outcome,
            user=user,
            session=session,
            ended=ended,
            block=block,
            blocked_until=None if blocked_until is None else round(blocked_until, 3),
        )
        fields = msgspec.to_builtins(entry)
        log.info(action, extra={"fields": fields})
        await self.store.list_push(self.key, fields, self.max_entries, self.retention)
        return entry

    async def recent(
        self, limit: int, *, user: str | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        """Return up to ``limit`` entries, newest first, of ``user`` and by ``actor`` if given."""
        if limit <= 0:
            return []
        everything = user is None and actor is None
        raw = await self.store.list_range(self.key, limit if everything else self.max_entries)
        entries = []
        for item in raw:
            try:
                entry = msgspec.convert(item, AuditEntry)
            except msgspec.ValidationError:
                continue  # not an entry this version can read: left out, not fatal
            if (user is None or entry.user == user) and (actor is None or entry.actor == actor):
                entries.append(entry)
                if len(entries) == limit:
                    break
        return entries


def refused(action: str, via: Via, reason: str) -> None:
    """Log an attempt that named no operator (never the token it tried)."""
    log.warning("admin_refused", extra={"fields": {"action": action, "via": via, "reason": reason}})
