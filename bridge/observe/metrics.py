"""Prometheus metrics, one registry per app (tests and embedders build many apps).

Labels take values from fixed sets only (configured avatar names, error codes, call names),
never from request input, so a visitor cannot grow the series count.

Active sessions are counted from the store when Prometheus scrapes, not tracked by lifecycle
listeners: sessions that simply time out vanish by TTL without an event, and with a shared
Redis store every instance must report the same total, not its own share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bridge.observe.lifecycle import Event
from bridge.store.base import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, avatars: Sequence[str]) -> None:
        self.avatars = frozenset(avatars)
        self.registry = CollectorRegistry()
        r = self.registry
        self.token_requests = Counter(
            "sentifyd_bridge_token_requests",
            "Token endpoint requests by avatar, HTTP status and outcome (ok or the error code).",
            ["avatar", "status", "outcome"],
            registry=r,
        )
        self.upstream_calls = Counter(
            "sentifyd_bridge_upstream_calls",
            "Calls to Sentifyd by call (login, refresh) and outcome (ok or the error code).",
            ["call", "outcome"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "sentifyd_bridge_upstream_call_seconds",
            "Duration of calls to Sentifyd, retries included.",
            ["call"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.token_cache = Counter(
            "sentifyd_bridge_token_cache",
            "Session token cache lookups by result (hit, miss).",
            ["result"],
            registry=r,
        )
        self.active_sessions = Gauge(
            "sentifyd_bridge_active_sessions",
            "Bridge sessions in the store (all instances sharing it), counted at scrape time.",
            registry=r,
        )
        self.handle_reuses = Counter(
            "sentifyd_bridge_refresh_handle_reuses",
            "Replays of a rotated refresh handle (suspected theft; the session was ended).",
            registry=r,
        )
        self.rate_limited = Counter(
            "sentifyd_bridge_rate_limited_requests",
            "Token requests refused with 429, by the limit that refused them (session, ip).",
            ["scope"],
            registry=r,
        )
        self.lifecycle_events = Counter(
            "sentifyd_bridge_lifecycle_events",
            "Lifecycle events by event and, for session_ended, reason.",
            ["event", "reason"],
            registry=r,
        )
        # Known series start at zero, so a rate() over them works from the first scrape.
        self._hit, self._miss = self.token_cache.labels("hit"), self.token_cache.labels("miss")
        # Each request's child series, found once: labels() costs more than inc() itself.
        self._requests: dict[tuple[str, int, str], Any] = {}
        for scope in ("session", "chain", "tabs", "user", "ip", "login", "upstream"):
            self.rate_limited.labels(scope)

    def name_avatars(self, avatars: Sequence[str]) -> None:
        """Label token requests with these avatar names from now on (a reload)."""
        self.avatars = frozenset(avatars)
        self._requests = {}

    # --- hooks (plain callables, wired in create_app) ---------------------------------------

    def observe_upstream(self, call: str, outcome: str, seconds: float) -> None:
        self.upstream_calls.labels(call, outcome).inc()
        self.upstream_seconds.labels(call).observe(seconds)

    def observe_cache(self, hit: bool) -> None:
        (self._hit if hit else self._miss).inc()

    def observe_rate_limited(self, scope: str) -> None:
        self.rate_limited.labels(scope).inc()

    def observe_event(self, event: Event) -> None:
        name = str(event.get("event", ""))
        self.lifecycle_events.labels(name, str(event.get("reason", ""))).inc()
        if name == "refresh_handle_reused":
            self.handle_reuses.inc()

    def observe_token_request(self, avatar: str | None, status: int, outcome: str) -> None:
        child = self._requests.get((avatar or "", status, outcome))
        if child is None:
            label = avatar if avatar in self.avatars else "unknown"
            child = self.token_requests.labels(label, str(status), outcome)
            if len(self._requests) < 1024:  # statuses and outcomes are few; stay bounded
                self._requests[(avatar or "", status, outcome)] = child
        child.inc()

    # --- exposition --------------------------------------------------------------------------

    async def render(self, store: Store) -> bytes:
        """Count the store's sessions, then return every metric in Prometheus text format."""
        count = 0
        async for _ in store.scan(store.session_key("session", "*")):
            count += 1
        self.active_sessions.set(count)
        return generate_latest(self.registry)
