"""Shared fixtures: settings with test secrets, the stand-in Sentifyd, apps, clients, a fake
clock, a site-login helper, live servers on 127.0.0.1, and the leak guard around every test
(``leak_guard``, see ``tests/support_leaks.py``)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import support_leaks
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge import app as bridge_app
from bridge.app import create_app
from bridge.doubles.fake_sentifyd import FakeState, create_fake_sentifyd
from bridge.identity.oidc import OIDCProvider
from bridge.identity.site_cookie import SiteCookieSource
from bridge.secret import Secret
from bridge.settings.loader import load_settings
from bridge.settings.schema import Settings
from bridge.web.fastpath import TokenFastPath
from bridge.wiring import Bridge

API_KEY = "sk-test-avatar-key-0123456789abcdef"
PREMIUM_API_KEY = "sk-test-premium-key-fedcba9876543210"
AVATAR_ID = "avtr_1234abcd"
PREMIUM_ID = "avtr_premium"
SITE_KEY = "site-secret-key-for-tests-0123456789"
BRIDGE_KEY = "bridge-secret-key-for-tests-0123456789abcdef"
PUBLIC_URL = "http://127.0.0.1:8000"

TEST_ENV = {
    "BRIDGE_SECRET_KEY": BRIDGE_KEY,
    "AVATAR_API_KEY": API_KEY,
    "PREMIUM_AVATAR_API_KEY": PREMIUM_API_KEY,
    "SITE_SECRET_KEY": SITE_KEY,
}
for _value in TEST_ENV.values():
    support_leaks.always(_value)


def base_config() -> dict[str, Any]:
    return {
        "server": {"public_url": PUBLIC_URL},
        "session": {"cookie_secure": False, "refresh_grace": 10},
        "sentifyd": {"backend": "http://127.0.0.1:9", "retry_backoff": 0.01, "timeout": 2},
        "avatars": [
            {"name": "default", "avatar_id": AVATAR_ID, "api_key_env": "AVATAR_API_KEY"},
            {
                "name": "premium",
                "avatar_id": PREMIUM_ID,
                "api_key_env": "PREMIUM_AVATAR_API_KEY",
                "allow": {"groups": ["customers"]},
            },
        ],
        "login": {
            "cookie": {
                "name": "session",
                "format": "flask",
                "secret_key_env": "SITE_SECRET_KEY",
                "max_age": 3600,
                "user_field": "user_id",
                "claim_fields": ["email", "groups", "email_verified"],
                "login_url": "https://shop.example.com/login?next={next}",
            }
        },
    }


def make_settings(
    overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> Settings:
    from bridge.settings.loader import _deep_merge

    data = _deep_merge(base_config(), overrides or {})
    return load_settings(None, {**TEST_ENV, **(env or {})}, overrides=data)


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


# --- live servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """An ASGI app served on 127.0.0.1 exactly as ``sentifyd-bridge serve`` serves it (granian,
    its default, uvicorn or hypercorn), in a thread with its own event loop."""

    def __init__(self, app: Any, port: int | None = None, server: str = "granian") -> None:
        self.app = app
        self.server = server
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        from bridge.settings.schema import ServerSettings
        from bridge.web.servers import run, serve

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            task = asyncio.ensure_future(
                serve(
                    self.app,
                    "127.0.0.1",
                    self.port,
                    ServerSettings(),
                    server=self.server,
                    shutdown=self._stop,
                )
            )
            self._ready.set()
            await task

        try:
            run(main())  # on uvloop, as serve runs it
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()

    def start(self) -> LiveServer:
        self._thread.start()
        self._ready.wait(10)
        for _ in range(200):
            if self._error:
                raise RuntimeError("live server failed to start") from self._error
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                threading.Event().wait(0.025)
        raise RuntimeError("live server did not start")

    def stop(self) -> None:
        if self._loop and self._stop and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def live_fake() -> Iterator[LiveServer]:
    fake_app = create_fake_sentifyd({API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID}, token_ttl=60)
    # The stand-in is served by hypercorn, as its own command serves it ("reset" relies on it).
    server = LiveServer(fake_app, server="hypercorn").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def real_op() -> Iterator[Any]:
    """A real OpenID provider (node-oidc-provider) on 127.0.0.1, shared by the SSO tests."""
    from support_oidc import start_real_provider

    provider = start_real_provider()
    yield provider
    provider.stop()


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
    text that passes no hook here (a subprocess's output). See ``tests/support_leaks.py``.
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

    def guarded(self: TokenFastPath, app: Any, serve: Any, **kwargs: Any) -> None:
        async def served(request: Any, avatar_name: str | None) -> Any:
            response = await serve(request, avatar_name)
            body = await response.get_data(as_text=True)
            support_leaks.register_answer(guard, response, body, request.endpoint)
            return response

        fast_path(self, app, served, **kwargs)

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
