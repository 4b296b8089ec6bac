"""The Express example as its README runs it: a real Express 5 shop (express-session +
connect-redis) on a real redis-server, and the bridge reading that shop's sessions."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.identity.cookie_formats.express import ExpressSession
from bridge.identity.site_cookie import SiteCookieSource
from bridge.settings.loader import load_settings
from support.config import API_KEY, TEST_ENV
from support.live import LiveServer, free_port
from support.redis import BridgeProcess, RedisServer, start_site_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "express_site"
SITE_COMMAND = "(cd examples/express_site && npm ci && node server.js)"
BRIDGE_COMMAND = "sentifyd-bridge serve --config examples/express_site/bridge.toml"
SECRET = "express-shop-session-secret-0123456789"
OLD_SECRET = "express-shop-older-secret-9876543210"


@dataclass
class Setup:
    site: str
    bridge: str
    redis: RedisServer
    config: Path
    bridge_log: Callable[[], str]


def test_readme_gives_the_two_commands() -> None:
    readme = (EXAMPLE / "README.md").read_text()
    assert SITE_COMMAND in readme and BRIDGE_COMMAND in readme


def start_site(port: int, redis_url: str, secrets: str, log: Path) -> subprocess.Popen[bytes]:
    # The README's first command, less `npm ci` (scripts/test.sh ran it for this folder).
    env = {**os.environ, "PORT": str(port), "REDIS_URL": redis_url, "SESSION_SECRET": secrets,
           "SHOP_TRUSTED_NEXT_ORIGINS": ""}  # fmt: skip
    argv = ["node", "server.js"]
    return start_site_process(
        argv, port=port, log=log, what="the Express shop", timeout=15, cwd=EXAMPLE, env=env
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("express")
    redis = RedisServer(tmp).start()
    fake = LiveServer(create_fake_sentifyd({API_KEY: "avtr_1234abcd"}, token_ttl=60)).start()
    site_port = free_port()
    site = start_site(site_port, redis.url, f"{SECRET},{OLD_SECRET}", tmp / "site.log")
    # The README's second command, its bridge.toml moved to spare ports.
    bridge = BridgeProcess(tmp, "bridge", config_path=tmp / "bridge.toml",
                           env={"SESSION_SECRET": f"{SECRET},{OLD_SECRET}"})  # fmt: skip
    text = (EXAMPLE / "bridge.toml").read_text()
    for old, new in (("3000", site_port), ("8000", bridge.port), ("8100", fake.port),
                     ("6379", redis.port)):  # fmt: skip
        assert f"127.0.0.1:{old}" in text
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    bridge.config_path.write_text(text)
    try:
        bridge.start()
        yield Setup(
            f"http://127.0.0.1:{site_port}", bridge.url, redis, bridge.config_path, bridge.log
        )
    finally:
        bridge.stop()
        site.terminate()
        site.wait(10)
        fake.stop()
        redis.stop()


_open: list[httpx.Client] = []


def new_client(**kwargs: Any) -> httpx.Client:
    client = httpx.Client(timeout=10, **kwargs)
    _open.append(client)
    return client


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def sign_in(setup: Setup, user: str = "alice") -> httpx.Client:
    client = new_client()
    form = {"username": user, "password": "demo-password", "next": "/"}
    response = client.post(f"{setup.site}/login", data=form)
    assert response.status_code == 303, response.text
    assert client.cookies.get("connect.sid", domain="127.0.0.1")
    return client


def tokens(setup: Setup, client: httpx.Client) -> httpx.Response:
    return client.get(f"{setup.bridge}/request_tokens")


def test_signed_in_customer_gets_tokens_and_logout_ends_them(setup: Setup) -> None:
    client = sign_in(setup)
    first = tokens(setup, client)
    assert first.status_code == 200, first.text
    assert "accessToken" in first.json()["tokens"]
    assert client.post(f"{setup.site}/logout").status_code == 303
    after = tokens(setup, client)
    assert after.status_code == 401 and after.json()["error"] == "login_required"


def test_logout_elsewhere_ends_the_avatar_even_with_the_old_cookie(setup: Setup) -> None:
    client = sign_in(setup)
    assert tokens(setup, client).status_code == 200
    stale = client.cookies.get("connect.sid", domain="127.0.0.1")
    assert stale is not None
    client.post(f"{setup.site}/logout")
    # The visitor (or a thief) still holding the old cookie: the session is gone from Redis.
    replay = new_client(cookies={"connect.sid": stale})
    refused = tokens(setup, replay)
    assert refused.status_code == 401 and refused.json()["error"] == "login_required"


def test_signed_in_non_customer_is_refused(setup: Setup) -> None:
    assert tokens(setup, sign_in(setup, "bob")).status_code == 403


def test_tampered_and_unsigned_cookies_are_not_a_login(setup: Setup) -> None:
    good = sign_in(setup).cookies.get("connect.sid", domain="127.0.0.1")
    assert good is not None
    sid = good.removeprefix("s%3A").split(".")[0]
    for value in (good[:-3] + ("abc" if not good.endswith("abc") else "xyz"), f"s%3A{sid}", sid,
                  "s%3A" + "x" * 5000, "%E0%A4%A", "s:"):  # fmt: skip
        answer = tokens(setup, new_client(cookies={"connect.sid": value}))
        assert answer.status_code == 401, value


def settings(setup: Setup, secrets: str) -> SiteCookieSource:
    site = load_settings(setup.config, {**TEST_ENV, "SESSION_SECRET": secrets}).site_cookie
    assert site is not None
    return SiteCookieSource(site)


async def test_rotation_and_a_wrong_secret(setup: Setup, tmp_path: Path) -> None:
    # A cookie the shop signed while OLD_SECRET was its only secret...
    port = free_port()
    old_shop = start_site(port, setup.redis.url, OLD_SECRET, tmp_path / "old.log")
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            form = {"username": "alice", "password": "demo-password"}
            await client.post(f"http://127.0.0.1:{port}/login", data=form)
            cookie = client.cookies.get("connect.sid", domain="127.0.0.1")
    finally:
        old_shop.terminate()
        old_shop.wait(10)
    assert cookie is not None
    # ...is still good while the bridge lists OLD_SECRET after the new one, and not without it.
    rotated = settings(setup, f"{SECRET},{OLD_SECRET}")
    only_new = settings(setup, SECRET)
    try:
        session = await rotated.format.read({"connect.sid": cookie})  # type: ignore[union-attr]
        assert session is not None and session["userId"] == "alice"
        assert await only_new.format.read({"connect.sid": cookie}) is None  # type: ignore[union-attr]
    finally:
        await rotated.aclose()
        await only_new.aclose()


async def test_session_past_its_cookie_expiry_is_over(setup: Setup) -> None:
    cookie = sign_in(setup).cookies.get("connect.sid", domain="127.0.0.1")
    site = load_settings(setup.config, {**TEST_ENV, "SESSION_SECRET": SECRET}).site_cookie
    assert site is not None and cookie is not None
    now = ExpressSession(site, time.time)
    in_15_days = ExpressSession(site, lambda: time.time() + 15 * 86400)  # maxAge is 14 days
    try:
        assert await now.read({"connect.sid": cookie}) is not None
        assert await in_15_days.read({"connect.sid": cookie}) is None
    finally:
        await now.aclose()
        await in_15_days.aclose()


def test_redis_outage_is_a_503_not_a_logout(setup: Setup) -> None:
    client = sign_in(setup)
    assert tokens(setup, client).status_code == 200
    setup.redis.pause()
    try:
        # A request with a fresh bridge session: the gate must ask the shop's Redis.
        fresh = new_client(cookies={"connect.sid": client.cookies["connect.sid"]})
        down = tokens(setup, fresh)
        assert down.status_code == 503
        assert down.json()["error"] == "identity_provider_unavailable"
    finally:
        setup.redis.resume()
    assert tokens(setup, client).status_code == 200  # recovered, still signed in
    cookie = client.cookies["connect.sid"]
    sid = cookie.removeprefix("s%3A").split(".")[0]
    log = setup.bridge_log()
    assert "site session store unavailable" in log
    assert sid not in log and SECRET not in log  # the session id is the login: never logged
