"""The two-instance example as shipped: its nginx.conf and bridge.toml, with Redis."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.identity.site_cookie import SiteCookieSource
from bridge.settings.loader import load_settings
from support.config import make_settings
from support.deploy import nginx_binary
from support.live import LiveServer, free_port
from support.redis import BridgeProcess, RedisServer, _wait, start_all

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "redis-nginx"
COOKIE = "sentifyd_bridge"


class Nginx:
    """The example's nginx.conf, its three ports moved to spare ones, run from a temp prefix."""

    def __init__(self, prefix: Path, a: int, b: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = prefix
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        text = (EXAMPLE / "nginx.conf").read_text()
        for old, new in (("8000", self.port), ("8001", a), ("8002", b)):
            assert text.count(f"127.0.0.1:{old}") >= 1
            text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
        (prefix / "nginx.conf").write_text(text)
        self.args = [nginx_binary(), "-e", "stderr", "-p", str(prefix), "-c", "nginx.conf"]
        self.process: subprocess.Popen[bytes] | None = None

    def check(self) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*self.args, "-t"], capture_output=True, timeout=10)

    def start(self) -> None:
        with (self.prefix / "nginx.log").open("ab") as log:
            self.process = subprocess.Popen(self.args, stderr=log)

        def listening() -> bool:
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return True
            except httpx.HTTPError:
                return False

        _wait(listening, 10, "nginx start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def stack(tmp_path: Path, live_fake: LiveServer) -> Iterator[tuple[Nginx, list[BridgeProcess]]]:
    redis = RedisServer(tmp_path).start()
    env = {"BRIDGE_STORE_URL": redis.url, "SENTIFYD_BACKEND": live_fake.url}
    config = EXAMPLE / "bridge.toml"
    bridges = [BridgeProcess(tmp_path, n, config_path=config, env=env) for n in ("a", "b")]
    nginx = Nginx(tmp_path / "nginx", bridges[0].port, bridges[1].port)
    try:
        start_all(bridges)
        nginx.start()
        yield nginx, bridges
    finally:
        nginx.stop()
        for bridge in bridges:
            bridge.stop()
        redis.stop()


def test_example_bridge_config_loads() -> None:
    env = {
        "BRIDGE_SECRET_KEY": "x" * 32,
        "AVATAR_API_KEY": "key",
        "SITE_SECRET_KEY": "y" * 32,
    }
    settings = load_settings(EXAMPLE / "bridge.toml", env)
    assert settings.store.url.startswith("redis://")
    assert settings.server.public_url == "http://127.0.0.1:8000"


def test_example_nginx_config_is_valid(tmp_path: Path) -> None:
    result = Nginx(tmp_path, 18001, 18002).check()
    assert result.returncode == 0, result.stderr.decode()


async def test_session_through_nginx_survives_either_instance_going(
    stack: tuple[Nginx, list[BridgeProcess]], live_fake: LiveServer
) -> None:
    nginx, (a, b) = stack
    site = SiteCookieSource(make_settings().site_cookie)  # type: ignore[arg-type]
    login = site.serializer.dumps({"user_id": "alice", "groups": ["customers"]})
    async with httpx.AsyncClient(base_url=nginx.url, timeout=10) as http:
        first = await http.get("/request_tokens", headers={"Cookie": f"session={login}"})
        assert first.status_code == 200, first.text
        session = first.cookies[COOKIE]
        cookie = {"Cookie": f"session={login}; {COOKIE}={session}"}

        async def tokens() -> httpx.Response:
            response = await http.get("/request_tokens", headers=cookie)
            assert response.status_code == 200, response.text
            assert COOKIE not in response.cookies  # the same session throughout
            return response

        for _ in range(4):  # round robin: both instances answer
            await tokens()
        a.stop()  # only B is left: the session is in Redis, not in A
        await tokens()
        start_all([a])
        b.stop()
        # nginx leaves A out for its fail_timeout (2 s) after A refused a connection.
        ready = f"{nginx.url}/readyz"
        await asyncio.to_thread(
            _wait, lambda: httpx.get(ready).status_code != 502, 10, "nginx to try A again"
        )
        await tokens()
    assert live_fake.app.extensions["fake_sentifyd"].login_calls == 1
