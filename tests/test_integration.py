"""The bridge under real hypercorn on 127.0.0.1, against the stand-in Sentifyd on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from quart import Quart
from quart.json.tag import TaggedJSONSerializer

from bridge.identity.site_cookie import SiteCookieSource
from bridge.settings.schema import Settings
from bridge.wiring import Bridge
from support.app import Clock
from support.config import API_KEY, PREMIUM_API_KEY, make_settings
from support.live import LiveServer

pytestmark = pytest.mark.integration

Start = Callable[..., tuple[LiveServer, Quart]]


def bridge_settings(live_fake: LiveServer, **session: Any) -> Settings:
    return make_settings(
        {"sentifyd": {"backend": live_fake.url}, "session": {"idle_timeout": 7200, **session}}
    )


def sign_site_cookie(
    settings: Settings, user: str, clock: Callable[[], float] = time.time, **claims: Any
) -> str:
    assert settings.site_cookie is not None
    source = SiteCookieSource(settings.site_cookie, clock=clock)  # the bridge's clock
    return str(source.serializer.dumps({"user_id": user, **claims}))


def expired_site_cookie(settings: Settings, user: str) -> str:
    """Sign a site cookie correctly, but two hours ago (the tests' max_age is one)."""

    class TwoHoursAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 7200

    assert settings.site_cookie is not None
    serializer = URLSafeTimedSerializer(
        settings.site_cookie.secret_keys[0].reveal(),
        salt="cookie-session",
        serializer=TaggedJSONSerializer(),
        signer=TwoHoursAgo,
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
    )
    return str(serializer.dumps({"user_id": user}))


@pytest.fixture
def fake_state(live_fake: LiveServer) -> Any:
    return live_fake.app.extensions["fake_sentifyd"]


@pytest.fixture
def captured_logs() -> Iterator[list[str]]:
    """Every log line the bridge writes, at production levels, formatted as in production."""
    from bridge.observe.logs import JsonFormatter, quiet_libraries

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # the bridge's own loggers at their most talkative
    quiet_libraries()
    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)


def client_for(server: LiveServer, site_cookie: str | None = None) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=server.url, timeout=10)
    if site_cookie:
        client.cookies.set("session", site_cookie, domain="127.0.0.1")
    return client


async def test_whole_session_leaks_no_secret(
    live_fake: LiveServer, live_bridge_factory: Start, fake_state: Any, captured_logs: list[str]
) -> None:
    settings = bridge_settings(live_fake, refresh_grace=0)
    server, _ = live_bridge_factory(settings)
    seen: list[str] = []

    def keep(response: httpx.Response) -> httpx.Response:
        seen.append(response.text)
        seen.extend(f"{k}: {v}" for k, v in response.headers.multi_items())
        return response

    cookie = sign_site_cookie(settings, "alice", groups=["customers"])
    async with client_for(server, cookie) as client:
        first = keep(await client.get("/request_tokens"))
        assert first.status_code == 200
        handle = first.json()["tokens"]["refreshToken"]
        premium = keep(await client.get("/request_tokens/premium"))
        assert premium.status_code == 200
        refreshed = keep(await client.get("/request_tokens", params={"refreshToken": handle}))
        assert refreshed.status_code == 200
        keep(await client.get("/request_tokens/ghost"))
        keep(await client.get("/request_tokens", params={"refreshToken": "garbage"}))
        keep(await client.get("/request_tokens", headers={"Origin": "https://evil.example"}))
        keep(await client.delete("/request_tokens"))
        keep(await client.get("/"))
        replay = keep(await client.get("/request_tokens", params={"refreshToken": handle}))
        assert replay.status_code == 401  # reuse after the (zero) grace window: theft
        again = keep(await client.get("/request_tokens"))
        assert again.status_code == 200  # the site login still stands: a fresh session
        client.cookies.delete("session")
        ended = keep(await client.get("/request_tokens"))
        assert ended.status_code == 401
        seen.extend(f"cookie {c.name}={c.value}" for c in client.cookies.jar)

    secrets = [API_KEY, PREMIUM_API_KEY, *fake_state.issued_refresh_tokens]
    assert len(fake_state.issued_refresh_tokens) >= 2
    everything = "\n".join(seen)
    for secret in secrets:
        assert secret not in everything
    log_text = "\n".join(captured_logs)
    assert "session_ended" in log_text  # the logs were captured at all
    for secret in [*secrets, cookie, handle, *fake_state.issued_access_tokens]:
        assert secret not in log_text


async def test_concurrent_requests_of_one_session_make_one_upstream_call(
    live_fake: LiveServer, live_bridge_factory: Start, fake_state: Any
) -> None:
    clock = Clock(start=time.time())
    settings = bridge_settings(live_fake)
    server, _ = live_bridge_factory(settings, clock=clock)
    fake_state.latency = 0.05
    async with client_for(server, sign_site_cookie(settings, "alice", clock)) as client:
        assert (await client.get("/request_tokens")).status_code == 200  # the session exists
        assert fake_state.login_calls == 1
        clock.advance(120)  # its 60 s tokens are stale now
        answers = await asyncio.gather(*(client.get("/request_tokens") for _ in range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert fake_state.login_calls == 2
    assert len({a.json()["tokens"]["accessToken"] for a in answers}) == 1
    assert len({a.json()["tokens"]["refreshToken"] for a in answers}) == 20


async def test_twenty_sessions_make_twenty_calls_and_never_share_tokens(
    live_fake: LiveServer, live_bridge_factory: Start, fake_state: Any
) -> None:
    settings = bridge_settings(live_fake)
    server, _ = live_bridge_factory(settings)
    fake_state.latency = 0.02
    clients = [client_for(server, sign_site_cookie(settings, f"user{i}")) for i in range(20)]
    try:
        firsts = await asyncio.gather(*(c.get("/request_tokens") for c in clients))
        seconds = await asyncio.gather(*(c.get("/request_tokens") for c in clients))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert fake_state.login_calls == 20
    tokens = [r.json()["tokens"]["accessToken"] for r in firsts]
    assert len(set(tokens)) == 20
    assert [r.json()["tokens"]["accessToken"] for r in seconds] == tokens


async def test_bad_input_gets_4xx_and_changes_nothing_stored(
    live_fake: LiveServer, live_bridge_factory: Start
) -> None:
    settings = bridge_settings(live_fake)
    server, app = live_bridge_factory(settings)
    store = Bridge.of(app).store
    good = sign_site_cookie(settings, "alice")
    async with client_for(server, good) as client:
        ok = await client.get("/request_tokens")
        assert ok.status_code == 200
        bridge_cookie = client.cookies.get("sentifyd_bridge")
    assert bridge_cookie

    expired = expired_site_cookie(settings, "alice")
    forged = URLSafeTimedSerializer("an-attackers-key-0123456789abcdef", salt="cookie-session")
    cases: list[tuple[dict[str, Any], int]] = [
        ({"cookies": {"session": str(forged.dumps({"user_id": "alice"}))}}, 401),
        ({"cookies": {"session": good[:-3] + "xyz"}}, 401),
        ({"cookies": {"session": expired}}, 401),
        ({"cookies": {"session": "x" * 3900}}, 401),
        (
            {
                "cookies": {"session": good, "sentifyd_bridge": "A" * 43},
                "params": {"refreshToken": "A" * 43},
            },
            401,
        ),
        (
            {
                "cookies": {"session": good, "sentifyd_bridge": bridge_cookie},
                "params": {"refreshToken": "nope"},
            },
            401,
        ),
        (
            {
                "cookies": {"session": good, "sentifyd_bridge": bridge_cookie},
                "params": {"refreshToken": "x" * 1000},
            },
            400,
        ),
        (
            {
                "cookies": {"session": good, "sentifyd_bridge": bridge_cookie},
                "params": {"q": "x" * 5000},
            },
            413,
        ),
        (
            {
                "cookies": {"session": good, "sentifyd_bridge": bridge_cookie},
                "url": "/request_tokens/ghost",
            },
            404,
        ),
        ({"cookies": {"session": good, "sentifyd_bridge": bridge_cookie}, "method": "PUT"}, 405),
        (
            {
                "cookies": {"session": good, "sentifyd_bridge": bridge_cookie},
                "headers": {"Sec-Fetch-Site": "cross-site"},
            },
            403,
        ),
        (
            {
                "cookies": {"session": good, "sentifyd_bridge": bridge_cookie},
                "method": "POST",
                "content": b"{" * 70000,
                "headers": {"Content-Type": "application/json"},
            },
            413,
        ),
    ]
    before = store.snapshot()  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as raw:
        for spec, status in cases:
            request = raw.build_request(
                spec.get("method", "GET"),
                spec.get("url", "/request_tokens"),
                params=spec.get("params"),
                headers=spec.get("headers"),
                content=spec.get("content"),
            )
            cookie_header = "; ".join(f"{k}={v}" for k, v in spec["cookies"].items())
            request.headers["Cookie"] = cookie_header
            response = await raw.send(request)
            assert response.status_code == status, (
                spec.get("url"),
                spec.get("params"),
                response.text[:200],
            )
            assert response.headers["content-type"].startswith("application/json")
            assert "error" in response.json()
        # A request line far beyond any browser's is refused by the server itself.
        huge = await raw.get("/request_tokens", params={"q": "x" * 40000})
        assert 400 <= huge.status_code < 500
    assert store.snapshot() == before  # type: ignore[attr-defined]


async def test_upstream_down_then_back(live_bridge_factory: Start) -> None:
    from bridge.doubles.fake_sentifyd import create_fake_sentifyd
    from support.config import AVATAR_ID
    from support.live import free_port

    port = free_port()
    settings = make_settings({"sentifyd": {"backend": f"http://127.0.0.1:{port}", "retries": 1}})
    server, _ = live_bridge_factory(settings)
    async with client_for(server, sign_site_cookie(settings, "alice")) as client:
        down = await client.get("/request_tokens")
        assert down.status_code == 502 and down.json()["error"] == "upstream_unavailable"
        fake = LiveServer(
            create_fake_sentifyd({API_KEY: AVATAR_ID}), port=port, server="hypercorn"
        ).start()
        try:
            up = await client.get("/request_tokens")
            assert up.status_code == 200
        finally:
            fake.stop()
