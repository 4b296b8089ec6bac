"""The parts one running app holds, reachable from any request as ``Bridge.of(app)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from quart import Quart

from bridge.broker import TokenBroker
from bridge.gate import Gate
from bridge.lifecycle import Lifecycle
from bridge.limits import RateLimiter
from bridge.metrics import Metrics
from bridge.sentifyd import SentifydClient
from bridge.sessions import SessionManager
from bridge.settings import Settings
from bridge.store.base import Store


@dataclass
class Bridge:
    settings: Settings
    store: Store
    lifecycle: Lifecycle
    sessions: SessionManager
    gate: Gate
    upstream: SentifydClient
    broker: TokenBroker
    http: httpx.AsyncClient
    clock: Callable[[], float]
    metrics: Metrics
    limiter: RateLimiter
    extras: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def of(app: Quart) -> Bridge:
        bridge: Bridge = app.extensions["bridge"]
        return bridge

    def page_path(self, avatar_name: str) -> str:
        """The avatar page's path, the ``next`` a login comes back to."""
        first = self.settings.avatars[0].name
        return self.url("/" if avatar_name == first else f"/avatars/{avatar_name}")

    def token_path(self, avatar_name: str) -> str:
        first = self.settings.avatars[0].name
        path = "/request_tokens" if avatar_name == first else f"/request_tokens/{avatar_name}"
        return self.url(path)

    def url(self, path: str) -> str:
        """Return the browser-visible path of the bridge's route ``path``, under base_path."""
        return self.settings.server.path_for(path)

    def public_url_for(self, path: str) -> str:
        """Return the absolute URL of the bridge's route ``path`` (e.g. an OIDC redirect URI).

        Scheme and host come from ``server.public_url``, never from a request header.
        """
        return self.settings.server.url_for(path)
