"""Test support for traffic and ending tests: real bridges on 127.0.0.1 over one store.

``Stack`` runs the stand-in Sentifyd (live, with a hook that tells when a login arrives), a
provider the tests control for single sign-on, and one bridge on the memory store or two
bridges sharing a real Redis, as two instances behind a balancer would. Every visitor's
requests come from 127.0.0.1: one address, like an office behind NAT.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart, request

from bridge.app import create_app
from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.identity.site_cookie import SiteCookieSource
from bridge.sessions.oidc_login import OIDCLogin
from bridge.settings.loader import _deep_merge, load_settings
from bridge.settings.schema import Settings
from bridge.store import open_store
from bridge.store.base import Store
from bridge.wiring import Bridge
from support.app import Clock
from support.config import (
    API_KEY,
    AVATAR_ID,
    PREMIUM_API_KEY,
    PREMIUM_ID,
    PUBLIC_URL,
    TEST_ENV,
    base_config,
)
from support.live import LiveServer
from support.oidc import OIDC_ENV, ControlledProvider, query_of
from support.redis import RedisServer

COOKIE = "sentifyd_bridge"
ADMIN_TOKEN = "admin-token-for-traffic-tests-0123456789"
STORES = ["memory", "redis"]


class Upstream:
    """The stand-in Sentifyd on a real socket; ``reached`` is set when a login arrives."""

    def __init__(self) -> None:
        self.app = create_fake_sentifyd(
            {API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID}, token_ttl=60
        )
        self.state = self.app.extensions["fake_sentifyd"]
        self.reached = threading.Event()

        @self.app.before_request
        async def seen() -> None:
            if request.path.endswith("/login"):
                self.reached.set()

        self.server = LiveServer(self.app).start()

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Stack:
    """One bridge on the memory store, or two on one Redis; ``apps[i]`` serves ``urls[i]``."""

    kind: str
    settings: Settings
    upstream: Upstream
    op: ControlledProvider
    clock: Clock
    apps: list[Quart] = field(default_factory=list)
    servers: list[LiveServer] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def url(self, turn: int) -> str:
        """The bridge that answers a visitor's ``turn``-th request (alternating with two)."""
        return self.urls[turn % len(self.urls)]

    @property
    def bridge(self) -> Bridge:
        return Bridge.of(self.apps[0])

    def inspector(self) -> Store:
        """A store for the test's own look: the app's own (memory) or a new Redis client."""
        if self.kind == "memory":
            return self.bridge.store
        return open_store(self.settings.store)

    def site_cookie(self, user: str, **claims: Any) -> str:
        assert self.settings.site_cookie is not None
        source = SiteCookieSource(self.settings.site_cookie, clock=self.clock)
        return str(source.serializer.dumps({"user_id": user, **claims}))

    @property
    def oidc(self) -> OIDCLogin:
        login = self.bridge.oidc_login
        assert login is not None
        return login

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def stack_settings(
    kind: str, redis_url: str | None, upstream: Upstream, **sections: Any
) -> Settings:
    """The default settings (limits included), the site cookie and SSO both on."""
    overrides: dict[str, Any] = {
        "server": {"public_url": PUBLIC_URL},
        "sentifyd": {"backend": upstream.url, "timeout": 5},
        "store": {"url": redis_url if kind == "redis" else "memory://", "lock_wait": 10},
    }
    data = _deep_merge(_deep_merge(base_config(), overrides), sections)
    data["login"]["oidc"] = {
        "issuer": "https://op.example.test",
        "client_id": "bridge-client",
        "client_secret_env": "OIDC_CLIENT_SECRET",
    }
    env = {**TEST_ENV, **OIDC_ENV, "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}
    return load_settings(None, env, overrides=data)


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Stack] = []
    redises: list[RedisServer] = []
    upstreams: list[Upstream] = []

    def build(kind: str, clock: Clock | None = None, **sections: Any) -> Stack:
        upstream = Upstream()
        upstreams.append(upstream)
        redis_url = None
        if kind == "redis":
            redises.append(RedisServer(tmp_path).start())
            redis_url = redises[-1].url
        settings = stack_settings(kind, redis_url, upstream, **sections)
        # Moved by hand only, from the start of a minute: every part agrees on "now", and a
        # test's traffic stays in one window of the per-minute limits.
        clock = clock or Clock(time.time() // 60 * 60)
        op = ControlledProvider(clock=clock)
        stack = Stack(kind, settings, upstream, op, clock)
        for _ in range(2 if kind == "redis" else 1):
            app = create_app(settings, oidc_transport=op.transport(), clock=clock)
            stack.apps.append(app)
            stack.servers.append(LiveServer(app).start())
        made.append(stack)
        return stack

    yield build
    for stack in made:
        stack.stop()
    for upstream in upstreams:
        upstream.stop()
    for redis in redises:
        redis.stop()


async def sso_sign_in(http: httpx.AsyncClient, stack: Stack, *, sub: str, sid: str) -> None:
    """Sign ``http`` in through the controlled provider; it then holds the bridge's cookie."""
    started = await http.get(f"{stack.url(0)}/login", params={"next": "/"})
    assert started.status_code == 302, started.text
    params = query_of(started.headers["location"])
    claims = stack.op.claims(params["nonce"], sub=sub, sid=sid)
    stack.op.token_response = stack.op.tokens(stack.op.sign(claims))
    done = await http.get(
        f"{stack.url(0)}/callback",
        params={"code": "the-code", "state": params["state"], "iss": stack.op.issuer},
    )
    assert done.status_code == 303, done.text
    assert http.cookies.get(COOKIE)
