"""Test support for the Redis store: a real redis-server on 127.0.0.1, and bridge processes.

``RedisServer`` runs Debian's ``redis-server`` on a spare port in a temporary directory (no
persistence unless asked) and can stop, pause, resume and restart it on the same port and
data directory. ``BridgeProcess`` runs ``sentifyd-bridge serve`` as a subprocess with a
config file written for the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import support_leaks

from conftest import BRIDGE_KEY, TEST_ENV, free_port

READY_TIMEOUT = 15.0


def _wait(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; bounded, for real external processes only."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not happen within {timeout} s")


class RedisServer:
    """A redis-server process on 127.0.0.1 that the test controls."""

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        password: str | None = None,
        tls: Mapping[str, str] | None = None,
    ) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            pytest.fail("redis-server is not installed (./scripts/test.sh installs it)")
        self.binary = binary
        self.directory = directory
        self.appendonly = appendonly
        self.password = password
        self.tls = dict(tls or {})
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls['ca']}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", self.tls["cert"],
                "--tls-key-file", self.tls["key"],
                "--tls-ca-cert-file", self.tls["ca"],
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        return args

    def client(self) -> redis.Redis:
        """A plain synchronous client, for the test's own look at the raw contents."""
        kwargs: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
        if self.tls:
            kwargs.update(ssl=True, ssl_ca_certs=self.tls["ca"])
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)

    def _pings(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(lambda: self._pings() or self.process.poll() is not None, 10, "redis start")  # type: ignore[union-attr]
        if self.process.poll() is not None:
            log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited at start:\n{log}")
        return self

    def stop(self) -> None:
        """Shut Redis down the normal way (SIGTERM: an append-only file is flushed)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot hear SIGTERM
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze Redis: connections stay open and nothing answers (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def dump(self) -> dict[str, Any]:
        """Return every key with its raw value (strings, sets, lists) and its TTL in ms."""
        contents: dict[str, Any] = {}
        with self.client() as client:
            for key in client.scan_iter(count=1000):
                kind = client.type(key).decode()
                value: Any
                if kind == "string":
                    value = client.get(key)
                elif kind == "set":
                    value = sorted(client.smembers(key))
                elif kind == "list":
                    value = client.lrange(key, 0, -1)
                else:
                    value = kind
                contents[key.decode()] = {"type": kind, "value": value, "pttl": client.pttl(key)}
        return contents


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh Redis with no persistence."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


# --- bridge processes -------------------------------------------------------------------------

CONFIG = """\
[server]
host = "127.0.0.1"
public_url = "http://127.0.0.1:8000"

[session]
cookie_secure = false
refresh_grace = {refresh_grace}

[store]
url = "{store_url}"
prefix = "{prefix}"
timeout = {store_timeout}
lock_wait = {lock_wait}
lock_lease = {lock_lease}

[sentifyd]
backend = "{backend}"
retry_backoff = 0.01
timeout = 5

[[avatars]]
name = "default"
avatar_id = "{avatar_id}"
api_key_env = "AVATAR_API_KEY"

[login.cookie]
name = "session"
format = "flask"
secret_key_env = "SITE_SECRET_KEY"
max_age = 3600
user_field = "user_id"
login_url = "https://shop.example.com/login?next={{next}}"

[limits]
# Every simulated visitor comes from 127.0.0.1; these tests are about the store, not the limits.
per_session = "off"
per_ip = "off"

[logging]
level = "INFO"
"""


def bridge_command() -> list[str]:
    """The installed ``sentifyd-bridge`` script beside this Python, else the module."""
    script = Path(sys.executable).with_name("sentifyd-bridge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bridge.cli"]


class BridgeProcess:
    """``sentifyd-bridge serve --config <file>`` on a spare port, started and stopped by a test."""

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        config_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        **config: Any,
    ) -> None:
        """Run with ``config_path``, or with a config written from ``CONFIG`` and ``config``."""
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"{name}.log"
        if config_path is None:
            config_path = directory / f"{name}.toml"
            values = {
                "refresh_grace": 10,
                "prefix": "sbridge",
                "store_timeout": 1.0,
                "lock_wait": 5.0,
                "lock_lease": 10.0,
                **config,
            }
            config_path.write_text(CONFIG.format(**values))
        self.config_path = config_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "SENTIFYD_"))},
            **TEST_ENV,
            "BRIDGE_SECRET_KEY": BRIDGE_KEY,
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *bridge_command(),
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait_ready(self) -> None:
        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"bridge {self.name} exited:\n{self.log()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(up, READY_TIMEOUT, f"bridge {self.name} start")

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        self.terminate()
        if self.process:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        # The process's log passes no hook of the leak guard: hand it over.
        support_leaks.scan(self.log(), f"log of bridge process {self.name}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_all(bridges: Sequence[BridgeProcess]) -> None:
    """Start bridges side by side (each takes about a second to import and bind)."""
    for bridge in bridges:
        bridge.spawn()
    for bridge in bridges:
        bridge.wait_ready()


def stop_all(bridges: Sequence[BridgeProcess]) -> None:
    """Stop bridges side by side (each may wait for its open connections to close)."""
    for bridge in bridges:
        bridge.terminate()
    for bridge in bridges:
        bridge.stop()
