"""Shared fixtures and hooks: settings with test secrets, the stand-in Sentifyd, apps, clients, a
fake clock, live servers on 127.0.0.1, the leak guard around every test (``leak_guard``, see
``tests/support/leaks.py``) and the check that CI skips nothing. The plain helpers the tests
import live in ``tests/support/`` (``support.config``, ``support.app``, ``support.live``, ...)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge import app as bridge_app
from bridge.app import create_app
from bridge.doubles.fake_sentifyd import FakeState, create_fake_sentifyd
from bridge.identity.oidc import OIDCProvider
from bridge.secret import Secret
from bridge.settings.schema import Settings
from bridge.web.fastpath import TokenFastPath
from bridge.web.requestlog import TOKEN_ENDPOINT
from support import leaks as support_leaks
from support.app import Clock
from support.config import API_KEY, AVATAR_ID, PREMIUM_API_KEY, PREMIUM_ID, make_settings
from support.live import LiveServer
from support.oidc import (
    Browser,
    ControlledProvider,
    RealProvider,
    make_sso_app,
    start_real_provider,
)
from support.redis import RedisServer


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def fake() -> Quart:
    return create_fake_sentifyd({API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID}, token_ttl=60)


@pytest.fixture
def fake_state(fake: Quart) -> Any:
    return fake.extensions["fake_sentifyd"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_app(fake: Quart, clock: Clock) -> Callable[..., Quart]:
    def factory(settings: Settings | None = None, **kwargs: Any) -> Quart:
        kwargs.setdefault("sentifyd_transport", httpx.ASGITransport(app=fake))
        kwargs.setdefault("clock", clock)
        return create_app(settings or make_settings(), **kwargs)

    return factory


@pytest.fixture
async def app(make_app: Callable[..., Quart]) -> AsyncIterator[Quart]:
    application = make_app()
    async with application.test_app():
        yield application


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


# --- live servers ---------------------------------------------------------------------------


@pytest.fixture
def live_fake() -> Iterator[LiveServer]:
    fake_app = create_fake_sentifyd({API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID}, token_ttl=60)
    # The stand-in is served by hypercorn, as its own command serves it ("reset" relies on it).
    server = LiveServer(fake_app, server="hypercorn").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def real_op() -> Iterator[RealProvider]:
    """A real OpenID provider (node-oidc-provider) on 127.0.0.1, shared by the SSO tests."""
    provider = start_real_provider()
    yield provider
    provider.stop()


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store's URL, once the memory store's and once a fresh Redis's."""
    if request.param == "memory":
        yield "memory://"
        return
    server = RedisServer(tmp_path).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium through Playwright (``support.browser``), closed after the test."""
    from support.browser import chromium  # Playwright only for the tests that use it

    async with chromium() as launched:
        yield launched


@pytest.fixture
def browsers(real_op: RealProvider) -> Iterator[Callable[[], Browser]]:
    """Opens plain-HTTP browsers on the real provider's bridge, closed after the test."""
    opened: list[Browser] = []

    def open_browser() -> Browser:
        browser = Browser(real_op.bridge_url)
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        browser.close()


@pytest.fixture
def op(clock: Clock) -> ControlledProvider:
    """An OpenID provider the test controls (in-process, through an httpx mock transport)."""
    return ControlledProvider(clock=clock)


@pytest.fixture
async def sso_app(op: ControlledProvider, clock: Clock, fake: Quart) -> AsyncIterator[Quart]:
    """The bridge signing in through ``op`` only, in its app context."""
    application = make_sso_app(op, clock, fake)
    async with application.test_app():
        yield application


@pytest.fixture
def live_bridge_factory() -> Iterator[Callable[..., tuple[LiveServer, Quart]]]:
    servers: list[LiveServer] = []

    def start(
        settings: Settings, *, server_name: str = "granian", **kwargs: Any
    ) -> tuple[LiveServer, Quart]:
        application = create_app(settings, **kwargs)
        server = LiveServer(application, server=server_name).start()
        servers.append(server)
        return server, application

    yield start
    for server in servers:
        server.stop()


# --- the leak guard --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def leak_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[support_leaks.LeakGuard]:
    """Fail any test in which a secret shows up in an answer, a log record or an exception.

    Secrets the shared fixtures, the bridge's settings (every ``Secret``), the stand-in Sentifyd
    and the OpenID provider create are collected here; a test that makes one of its own calls
    ``support_leaks.secret(value)`` (never allowed anywhere) or ``support_leaks.credential(value)``
    (allowed only in the answer that hands it out), and ``support_leaks.scan(text, where)`` for
    text that passes no hook here (a subprocess's output). See ``tests/support/leaks.py``.
    """
    with support_leaks.guarding() as guard:
        _install_leak_hooks(monkeypatch, guard)
        yield guard
    leaks = guard.leaks()
    if leaks:
        pytest.fail("secrets leaked:\n" + "\n".join(leaks), pytrace=False)


def _install_leak_hooks(monkeypatch: pytest.MonkeyPatch, guard: support_leaks.LeakGuard) -> None:
    secret_init = Secret.__init__

    def new_secret(self: Secret, value: str) -> None:
        secret_init(self, value)
        guard.add(value, support_leaks.SECRET)

    issue = FakeState.issue

    def issued(self: FakeState, avatar_id: str) -> dict[str, Any]:
        answer = issue(self, avatar_id)
        guard.add(self.issued_refresh_tokens[-1], support_leaks.SECRET)
        guard.add(self.issued_access_tokens[-1], support_leaks.CREDENTIAL)
        guard.add(str(self.signing_key.as_dict(private=True)["k"]), support_leaks.SECRET)
        return answer

    token_request = OIDCProvider._token_request

    async def provider_tokens(self: OIDCProvider, **kwargs: Any) -> dict[str, Any]:
        answer = await token_request(self, **kwargs)
        for name in ("access_token", "refresh_token"):
            value = answer.get(name)
            guard.add(value if isinstance(value, str) else None, support_leaks.SECRET)
        if isinstance(answer.get("id_token"), str):
            guard.add(answer["id_token"], support_leaks.CREDENTIAL)
        return answer

    process_response = Quart.process_response

    async def answered(self: Quart, response: Any, *args: Any) -> Any:
        response = await process_response(self, response, *args)
        if self.name == "bridge":
            from quart import request

            endpoint = request.endpoint
            body = ""
            if endpoint != "static" and not getattr(response, "is_streamed", False):
                body = await response.get_data(as_text=True)
            support_leaks.register_answer(guard, response, body, endpoint)
        return response

    # The token endpoint's GETs take the fast path (bridge.web.fastpath), past Quart's
    # process_response: its answers are registered as it hands them to the server.
    fast_path = TokenFastPath.__init__

    def guarded(self: TokenFastPath, app: Any, serve: Any) -> None:
        async def served(request: Any, avatar_name: str | None) -> Any:
            response = await serve(request, avatar_name)
            body = await response.get_data(as_text=True)
            # The fast path serves the token endpoint only.
            support_leaks.register_answer(guard, response, body, TOKEN_ENDPOINT)
            return response

        fast_path(self, app, served)

    error_answer = bridge_app.error_answer

    def errored(error: Exception) -> Any:
        support_leaks.register_exception(guard, error)
        return error_answer(error)

    handle_user_exception = Quart.handle_user_exception

    async def handled(self: Quart, error: Exception) -> Any:
        if self.name == "bridge":
            support_leaks.register_exception(guard, error)
        return await handle_user_exception(self, error)

    monkeypatch.setattr(Secret, "__init__", new_secret)
    monkeypatch.setattr(FakeState, "issue", issued)
    monkeypatch.setattr(OIDCProvider, "_token_request", provider_tokens)
    monkeypatch.setattr(Quart, "process_response", answered)
    monkeypatch.setattr(Quart, "handle_user_exception", handled)
    monkeypatch.setattr(TokenFastPath, "__init__", guarded)
    monkeypatch.setattr(bridge_app, "error_answer", errored)


# --- no silent skips --------------------------------------------------------------------------

# A skip that CI accepts, by test id (a prefix of the node id): each entry says why it cannot run
# on CI's machine. Empty: under CI, every collected test runs or the run fails.
CI_SKIP_ALLOWLIST: dict[str, str] = {}

_skipped: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def unallowed_skips(skipped: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the skips that no entry of the allowlist covers."""
    return [
        (nodeid, reason)
        for nodeid, reason in skipped
        if not any(nodeid.startswith(allowed) for allowed in CI_SKIP_ALLOWLIST)
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("CI"):
        return
    refused = unallowed_skips(_skipped)
    if refused:
        lines = [f"  {nodeid}: {reason}" for nodeid, reason in refused]
        print("\nCI is set and these tests were skipped (allowlist: tests/conftest.py):")
        print("\n".join(lines))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
