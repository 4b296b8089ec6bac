"""The upstream fault matrix over real sockets: the bridge under uvicorn (serve's default; the
first-request matrix once more under hypercorn) on 127.0.0.1, talking to the stand-in Sentifyd
under hypercorn on 127.0.0.1, made to fail in every way it can.

Each fault must give its documented JSON error (502 ``upstream_unavailable``, 502
``upstream_rejected`` with ``upstream_status``, 504 ``upstream_timeout``), carry no stack trace
and no secret, leave the visitor's session and handle intact, and the first request after the
fault heals must succeed. (``tests/test_tokens.py`` covers the same errors in-process.)
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from quart import Quart

from bridge.app import create_app
from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.identity.site_cookie import SiteCookieSource
from bridge.settings.schema import Settings
from support.app import Clock
from support.config import API_KEY, AVATAR_ID, PREMIUM_API_KEY, PREMIUM_ID, make_settings
from support.live import LiveServer

pytestmark = pytest.mark.integration

TIMEOUT = 1.0  # the bridge's upstream timeout here: long for loopback, short for a test
RETRIES = 1  # so a retried fault makes exactly two upstream calls


@dataclass
class Rig:
    """A stand-in Sentifyd and a bridge pointed at it, both live, and the bridge's clock."""

    fake: LiveServer
    bridge: LiveServer
    app: Quart
    settings: Settings
    clock: Clock

    @property
    def state(self) -> Any:
        return self.fake.app.extensions["fake_sentifyd"]

    def visitor(self) -> httpx.AsyncClient:
        """A new visitor, signed in to the site (each test its own, on the shared rig)."""
        assert self.settings.site_cookie is not None
        user = "user-" + secrets.token_hex(4)
        source = SiteCookieSource(self.settings.site_cookie, clock=self.clock)  # the bridge's
        cookie = source.serializer.dumps({"user_id": user})
        client = httpx.AsyncClient(base_url=self.bridge.url, timeout=30)
        client.cookies.set("session", str(cookie), domain="127.0.0.1")
        return client


def new_fake(port: int | None = None, **kwargs: Any) -> LiveServer:
    keys = {API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID}
    return LiveServer(create_fake_sentifyd(keys, **kwargs), port=port, server="hypercorn").start()


def rig_settings(fake_url: str) -> Settings:
    return make_settings(
        {
            "sentifyd": {"backend": fake_url, "timeout": TIMEOUT, "retries": RETRIES},
            "session": {"idle_timeout": 7200},
            # One shared rig serves every case from one address: not a test of the limits.
            "limits": {"per_session": "off", "per_ip": "off"},
        }
    )


def start_rig(server: str = "uvicorn", **fake_kwargs: Any) -> Rig:
    fake = new_fake(**fake_kwargs)
    settings = rig_settings(fake.url)
    clock = Clock(start=time.time())
    app = create_app(settings, clock=clock)
    return Rig(fake, LiveServer(app, server=server).start(), app, settings, clock)


def stop_rig(rig: Rig) -> None:
    rig.bridge.stop()
    rig.fake.stop()


@pytest.fixture(scope="module")
def shared_rig() -> Iterator[Rig]:
    rig = start_rig()
    yield rig
    stop_rig(rig)


@pytest.fixture(scope="module")
def hypercorn_rig() -> Iterator[Rig]:
    rig = start_rig("hypercorn")
    yield rig
    stop_rig(rig)


@pytest.fixture
def rig(shared_rig: Rig) -> Iterator[Rig]:
    shared_rig.state.reset()
    yield shared_rig
    shared_rig.state.reset()


@pytest.fixture(params=["uvicorn", "hypercorn"])
def any_server_rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """The shared rig's bridge under uvicorn, and once more under hypercorn."""
    rig: Rig = request.getfixturevalue(
        "shared_rig" if request.param == "uvicorn" else "hypercorn_rig"
    )
    rig.state.reset()
    yield rig
    rig.state.reset()


@pytest.fixture
def bridge_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="bridge")
    return caplog


def assert_clean_error(
    rig: Rig, response: httpx.Response, status: int, code: str
) -> dict[str, Any]:
    """The documented JSON error, and nothing a client should not see."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["error"] == code
    text = response.text + str(response.headers)
    assert "Traceback" not in text and 'File "' not in text
    for secret in (API_KEY, PREMIUM_API_KEY, *rig.state.issued_refresh_tokens):
        assert secret not in text
    return body


def assert_clean_logs(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    """The bridge's own log lines: no traceback, no secret."""
    ours = [
        r
        for r in logs.records
        if r.name.startswith("bridge") and not r.name.startswith("bridge.doubles.fake_sentifyd")
    ]
    for record in ours:
        assert record.exc_info is None, record.getMessage()
        line = record.getMessage() + str(getattr(record, "fields", ""))
        for secret in (API_KEY, PREMIUM_API_KEY, *rig.state.issued_refresh_tokens):
            assert secret not in line


# --- the matrix ------------------------------------------------------------------------------

RETRIED = RETRIES + 1
FAULTS = [
    # fail mode, status, error code, upstream calls the bridge makes for one request
    ("reset", 502, "upstream_unavailable", RETRIED),
    ("hang", 504, "upstream_timeout", 1),
    ("status:500", 502, "upstream_unavailable", RETRIED),
    ("status:502", 502, "upstream_unavailable", RETRIED),
    ("status:503", 502, "upstream_unavailable", RETRIED),
    ("status:400", 502, "upstream_rejected", 1),
    ("status:401", 502, "upstream_rejected", 1),
    ("status:403", 502, "upstream_rejected", 1),
    ("status:404", 502, "upstream_rejected", 1),
    ("status:429", 502, "upstream_rejected", 1),
    ("non_json", 502, "upstream_unavailable", 1),
    ("missing_fields", 502, "upstream_unavailable", 1),
    ("huge", 502, "upstream_unavailable", 1),
]


@pytest.mark.parametrize(("fail", "status", "code", "calls"), FAULTS)
async def test_fault_on_first_request_is_a_clean_error_and_heals(
    any_server_rig: Rig,
    bridge_logs: pytest.LogCaptureFixture,
    fail: str,
    status: int,
    code: str,
    calls: int,
) -> None:
    rig = any_server_rig
    rig.state.fail = fail
    async with rig.visitor() as visitor:
        started = time.monotonic()
        response = await visitor.get("/request_tokens")
        elapsed = time.monotonic() - started
        body = assert_clean_error(rig, response, status, code)
        if code == "upstream_rejected":
            assert body["upstream_status"] == int(fail.removeprefix("status:"))
        assert rig.state.login_calls == calls
        assert elapsed < TIMEOUT * RETRIED + 2  # bounded: no fault makes the visitor wait long

        rig.state.fail = None
        healed = await visitor.get("/request_tokens")
        assert healed.status_code == 200, healed.text[:300]
        assert healed.json()["tokens"]["accessToken"] in rig.state.issued_access_tokens
    assert_clean_logs(rig, bridge_logs)


@pytest.mark.parametrize(("fail", "status", "code", "calls"), FAULTS)
async def test_fault_on_refresh_keeps_the_handle_and_heals(
    rig: Rig, bridge_logs: pytest.LogCaptureFixture, fail: str, status: int, code: str, calls: int
) -> None:
    async with rig.visitor() as visitor:
        first = await visitor.get("/request_tokens")
        assert first.status_code == 200
        handle = first.json()["tokens"]["refreshToken"]
        rig.clock.advance(120)  # the 60 s tokens are stale: the refresh must reach Sentifyd

        rig.state.fail = fail
        response = await visitor.get("/request_tokens", params={"refreshToken": handle})
        assert_clean_error(rig, response, status, code)
        assert rig.state.login_calls == 1 + calls

        # The failed refresh rotated nothing: the component retries with the same handle.
        rig.state.fail = None
        healed = await visitor.get("/request_tokens", params={"refreshToken": handle})
        assert healed.status_code == 200, healed.text[:300]
        tokens = healed.json()["tokens"]
        assert tokens["refreshToken"] != handle
        assert tokens["accessToken"] != first.json()["tokens"]["accessToken"]
    assert_clean_logs(rig, bridge_logs)


async def test_a_fault_that_clears_within_the_retries_is_invisible(rig: Rig) -> None:
    rig.state.fail, rig.state.fail_count = "reset", RETRIES
    async with rig.visitor() as visitor:
        response = await visitor.get("/request_tokens")
    assert response.status_code == 200
    assert rig.state.login_calls == RETRIED


async def test_timeout_applies_to_a_slow_answer_not_only_a_silent_one(rig: Rig) -> None:
    rig.state.latency = TIMEOUT * 1.5
    async with rig.visitor() as visitor:
        response = await visitor.get("/request_tokens")
        assert_clean_error(rig, response, 504, "upstream_timeout")
        rig.state.latency = 0
        assert (await visitor.get("/request_tokens")).status_code == 200


# --- faults that need their own servers ------------------------------------------------------


async def test_sentifyd_going_away_mid_session_is_502_and_heals_when_it_returns(
    bridge_logs: pytest.LogCaptureFixture,
) -> None:
    """Connection refused (and pooled connections dropped) while a visitor holds a session."""
    rig = start_rig()
    port = rig.fake.port
    try:
        async with rig.visitor() as visitor:
            first = await visitor.get("/request_tokens")
            assert first.status_code == 200
            handle = first.json()["tokens"]["refreshToken"]
            rig.fake.stop()
            rig.clock.advance(120)

            refresh = await visitor.get("/request_tokens", params={"refreshToken": handle})
            assert_clean_error(rig, refresh, 502, "upstream_unavailable")
            new_tab = await visitor.get("/request_tokens")
            assert_clean_error(rig, new_tab, 502, "upstream_unavailable")

            rig.fake = new_fake(port=port)  # Sentifyd is back, on the same address
            healed = await visitor.get("/request_tokens", params={"refreshToken": handle})
            assert healed.status_code == 200, healed.text[:300]
            assert healed.json()["tokens"]["accessToken"] in rig.state.issued_access_tokens
        assert_clean_logs(rig, bridge_logs)
    finally:
        stop_rig(rig)


async def test_token_without_expiry_takes_it_from_the_jwt() -> None:
    """No ``expires_in``: the expiry comes from the access token's ``exp``, not the default."""
    rig = start_rig(shape="no_expiry", token_ttl=300)
    try:
        async with rig.visitor() as visitor:
            response = await visitor.get("/request_tokens")
        assert response.status_code == 200, response.text[:300]
        expires_in = response.json()["tokens"]["expiresIn"]
        default = rig.settings.sentifyd.default_expires_in
        assert 290 <= expires_in <= 300 and expires_in != default
    finally:
        stop_rig(rig)


async def test_requests_queued_behind_a_failing_call_share_its_failure(rig: Rig) -> None:
    """Single flight holds for failures too: five tabs of one session waiting on a hanging
    call get its 504 together, not one timeout each in turn (and Sentifyd gets one call)."""
    async with rig.visitor() as visitor:
        assert (await visitor.get("/request_tokens")).status_code == 200
        rig.clock.advance(120)
        rig.state.fail = "hang"
        started = time.monotonic()
        answers = await asyncio.gather(*(visitor.get("/request_tokens") for _ in range(5)))
        elapsed = time.monotonic() - started
        assert [a.status_code for a in answers] == [504] * 5
        assert rig.state.login_calls == 2
        assert elapsed < TIMEOUT * 2
        # A request that starts after the failure tries again, and succeeds once it heals.
        rig.state.fail = None
        assert (await visitor.get("/request_tokens")).status_code == 200


@pytest.mark.parametrize(
    ("fail", "status", "code", "logins"),
    [
        ("status:401", 200, None, 1),  # refused: log in again with the API key instead
        ("status:503", 502, "upstream_unavailable", 0),  # down: the login would be too
        ("hang", 504, "upstream_timeout", 0),
    ],
)
async def test_upstream_refresh_call_failing(
    fail: str, status: int, code: str | None, logins: int
) -> None:
    """With Sentifyd's refresh call configured, a refused refresh falls back to a login; an
    unreachable or silent one is the visitor's error, and the handle survives it."""
    fake = new_fake()
    settings = make_settings(
        {
            "sentifyd": {
                "backend": fake.url,
                "timeout": TIMEOUT,
                "retries": 0,
                "refresh_path": "/api/v1/chatbot/refresh",
            },
            "limits": {"per_session": "off", "per_ip": "off"},
        }
    )
    clock = Clock(start=time.time())
    app = create_app(settings, clock=clock)
    rig = Rig(fake, LiveServer(app).start(), app, settings, clock)
    try:
        async with rig.visitor() as visitor:
            handle = (await visitor.get("/request_tokens")).json()["tokens"]["refreshToken"]
            rig.clock.advance(120)
            rig.state.fail, rig.state.fail_count = fail, 1  # the refresh call only
            response = await visitor.get("/request_tokens", params={"refreshToken": handle})
            assert rig.state.refresh_calls == 1
            assert rig.state.login_calls == 1 + logins
            if code is None:
                assert response.status_code == status, response.text[:300]
            else:
                assert_clean_error(rig, response, status, code)
                healed = await visitor.get("/request_tokens", params={"refreshToken": handle})
                assert healed.status_code == 200, healed.text[:300]
    finally:
        stop_rig(rig)
