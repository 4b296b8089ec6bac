"""Helpers around an app under test: a clock moved by hand, a recording transport, and the site
login cookie a test signs in with."""

from __future__ import annotations

from typing import Any

from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge.identity.site_cookie import SiteCookieSource
from bridge.wiring import Bridge
from support import leaks as support_leaks


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordedTransport:
    """A connection's real transport, noting each write it is given (and passing it on)."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self.transport = transport
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def site_cookie(app: Quart, user: str = "alice", **claims: Any) -> str:
    """Sign a site login cookie the way the site's own Flask login would."""
    bridge = Bridge.of(app)
    assert bridge.settings.site_cookie is not None
    payload = {"user_id": user, **claims}
    # Signed on the app's clock, as the site and the bridge share the time of day.
    source = SiteCookieSource(bridge.settings.site_cookie, clock=bridge.clock)
    cookie = str(source.serializer.dumps(payload))
    support_leaks.credential(cookie)
    return cookie


def login(client: Client, app: Quart, user: str = "alice", **claims: Any) -> None:
    """Make the client look signed in to the site, without a login round-trip."""
    client.set_cookie("localhost", "session", site_cookie(app, user, **claims))


def bridge_of(app: Quart) -> Bridge:
    return Bridge.of(app)
