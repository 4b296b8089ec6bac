"""Per-user token lifecycle events: what happened to whose session, and when.

Each event is written to the user's capped event list in the store and logged as one JSON
line. Events carry a session id that is itself a hash of the cookie, the user, the avatar and
facts about tokens (expiry, a hash of the token), never a token, handle or cookie. With
``record_client`` they also carry the client's IP and (truncated) user agent, when the event
happens during a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal, get_args

from bridge.observe.exchange import Exchange
from bridge.observe.exchange import current as current_exchange
from bridge.store.base import Store

EventName = Literal[
    "session_started",
    "tokens_issued",
    "tokens_refreshed",
    "refresh_handle_reused",
    "access_denied",
    "session_ended",
]
EndReason = Literal[
    "logout",
    "idle_timeout",
    "absolute_timeout",
    "backchannel_logout",
    "admin_revoked",
    "site_logout",
    "upstream_refused",
    "handle_reuse",
    "evicted",
    "user_signed_out_device",  # the visitor ended one of their sessions ("my devices")
    "user_signed_out_others",  # the visitor ended all their sessions but the one they used
]
EVENT_TYPES: tuple[EventName, ...] = get_args(EventName)
END_REASONS: tuple[EndReason, ...] = get_args(EndReason)

MAX_USER_AGENT = 200
# One event as it is logged and kept: event, time and user, then the facts its kind adds; read
# back from the store as JSON (earlier versions' events included), so an open mapping.
Event = dict[str, Any]

log = logging.getLogger("bridge.lifecycle")


class Lifecycle:
    def __init__(
        self,
        store: Store,
        *,
        retention: float = 7 * 86400,
        max_events: int = 200,
        record_client: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.retention = retention
        self.max_events = max_events
        self.record_client = record_client
        self.clock = clock
        self.listeners: list[Callable[[Event], None]] = []

    async def emit(
        self, event: EventName, *, user: str, session_id: str | None = None, **fields: Any
    ) -> Event:
        # Typed for callers; checked again for names that come from data (a test, a replay).
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown lifecycle event {event!r}")
        if event == "session_ended" and fields.get("reason") not in END_REASONS:
            raise ValueError("session_ended needs a known reason")
        record: Event = {"event": event, "time": round(self.clock(), 3), "user": user}
        if session_id:
            record["session"] = session_id
        record.update({k: v for k, v in fields.items() if v is not None})
        exchange = current_exchange()
        if exchange is not None:
            self._add_request_facts(record, exchange)
        log.info(event, extra={"fields": record})
        for listener in self.listeners:
            listener(record)
        await self.store.list_push(
            self.store.key("events", user), record, self.max_events, self.retention
        )
        return record

    async def recent(self, user: str, limit: int = 50) -> list[Event]:
        """Return up to ``limit`` of the user's events, newest first."""
        return await self.store.list_range(self.store.key("events", user), limit)

    def _add_request_facts(self, record: Event, exchange: Exchange) -> None:
        # The token route names its avatar once (exchange.avatar) for every event it causes.
        if exchange.avatar and "avatar" not in record:
            record["avatar"] = exchange.avatar
        # An operator's request (admin API) is not the user's client: leave its address out.
        if self.record_client and not exchange.operator:
            record["client_ip"] = exchange.request.remote_addr
            agent = exchange.request.headers.get("User-Agent")
            if agent:
                record["user_agent"] = agent[:MAX_USER_AGENT]
