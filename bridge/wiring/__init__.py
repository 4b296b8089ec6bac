"""The parts one running bridge holds, built once from settings by :func:`assemble`.

``create_app``, the CLI and the benchmark all call :func:`assemble`; a request reaches the
parts as ``Bridge.of(app)``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx
from quart import Quart

from bridge.access.limits import RateLimiter
from bridge.broker import TokenBroker
from bridge.gate import Gate, IdentitySource
from bridge.identity.jwt_login import JWTSource
from bridge.identity.oidc import OIDCProvider
from bridge.identity.session_check import SessionCheckSource
from bridge.identity.site_cookie import SiteCookieSource
from bridge.observe.lifecycle import Lifecycle
from bridge.observe.metrics import Metrics
from bridge.sessions.audit import Audit
from bridge.sessions.manager import SessionManager
from bridge.sessions.oidc_login import OIDCLogin
from bridge.sessions.oidc_source import OIDCSource
from bridge.settings.schema import Settings
from bridge.store import Store, open_store
from bridge.upstream.sentifyd import SentifydClient


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
    audit: Audit
    oidc_login: OIDCLogin | None = None  # when [login.oidc] names a provider
    # What the parts opened (sources, providers, the Sentifyd client), closed by aclose().
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @staticmethod
    def of(app: Quart) -> Bridge:
        bridge: Bridge = app.extensions["bridge"]
        return bridge

    @property
    def logout_url(self) -> str:
        """The site's own sign-out URL (``login.cookie.logout_url``), or ""."""
        cookie = self.settings.site_cookie
        return cookie.logout_url if cookie is not None else ""

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

    async def aclose(self) -> None:
        """Close what the parts opened; the store is its opener's to close."""
        for close in self.closers:
            await close()


def assemble(
    settings: Settings,
    *,
    store: Store | None = None,
    sentifyd_transport: httpx.AsyncBaseTransport | None = None,
    oidc_transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    sources: Sequence[IdentitySource] | None = None,
    metrics: Metrics | None = None,
) -> Bridge:
    """Build the bridge's parts from ``settings``: store, lifecycle, sessions, limiter, Sentifyd
    client, broker, metrics and the ways in. Tests pass a store, transports, a clock or
    ``sources`` (which then replace the configured identity sources); a reload passes the
    running store and ``metrics``, which keep counting."""
    store = store or open_store(settings.store)
    lifecycle = Lifecycle(
        store,
        retention=settings.lifecycle.retention,
        max_events=settings.lifecycle.max_events,
        record_client=settings.lifecycle.record_client,
        clock=clock,
    )
    sessions = SessionManager(settings, store, lifecycle, clock=clock)
    closers: list[Callable[[], Awaitable[None]]] = []
    ways: list[IdentitySource] = []
    if sources is None:
        own = _site_sources(settings, clock)
        ways.extend(own)
        closers.extend(source.aclose for source in own)
    oidc_login: OIDCLogin | None = None
    if settings.oidc:
        # The bridge's own base URL: redirect URIs live under base_path too.
        base_url = settings.server.url_for("/").rstrip("/")
        providers = [
            OIDCProvider(p, base_url, transport=oidc_transport, clock=clock) for p in settings.oidc
        ]
        oidc = OIDCSource(settings, providers, sessions, clock=clock)
        if sources is None:
            ways.append(oidc)
        oidc_login = OIDCLogin(settings, store, sessions, oidc, clock=clock)
        closers.extend(p.aclose for p in providers)
    if sources is not None:
        ways = list(sources)  # a test's own sources stand in for the configured ones
    limiter = RateLimiter(settings.limits, store, clock=clock)
    sessions.before_create = limiter.check_new_session
    gate = Gate(sessions, ways, lifecycle, limiter)
    http = SentifydClient.build_http(settings.sentifyd, sentifyd_transport)
    closers.append(http.aclose)
    upstream = SentifydClient(settings.sentifyd, http, clock=clock)
    if metrics is None:
        metrics = Metrics([a.name for a in settings.avatars])
    else:
        metrics.name_avatars([a.name for a in settings.avatars])
    upstream.observer = metrics.observe_upstream
    broker = TokenBroker(
        settings,
        store,
        sessions,
        upstream,
        lifecycle,
        clock=clock,
        on_cache=metrics.observe_cache,
        count_request=limiter.count_session,
        before_login=limiter.spend_upstream_login,
    )
    lifecycle.listeners.append(metrics.observe_event)
    limiter.on_limited = metrics.observe_rate_limited
    return Bridge(
        settings=settings,
        store=store,
        lifecycle=lifecycle,
        sessions=sessions,
        gate=gate,
        upstream=upstream,
        broker=broker,
        http=http,
        clock=clock,
        metrics=metrics,
        limiter=limiter,
        audit=Audit(store, settings.admin, clock=clock),
        oidc_login=oidc_login,
        closers=closers,
    )


def _site_sources(
    settings: Settings, clock: Callable[[], float]
) -> list[SiteCookieSource | JWTSource | SessionCheckSource]:
    """The ways in the site's own login offers, in the order the gate asks them."""
    own: list[SiteCookieSource | JWTSource | SessionCheckSource] = []
    if settings.site_cookie:
        own.append(SiteCookieSource(settings.site_cookie, clock=clock))
    if settings.jwt:
        own.append(JWTSource(settings.jwt, clock=clock))
    if settings.session_check is not None:
        own.append(SessionCheckSource(settings.session_check, clock=clock))
    return own
