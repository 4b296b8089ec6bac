"""The container image (Dockerfile, scripts/image.sh) as an operator runs it.

Built offline from uv.lock by scripts/image.sh on a docker daemon the test starts for itself (its
data under .cache/image/docker, so a second run reuses the base and the layers), then run
read-only with a tmpfs on /tmp, as its non-root user, on the host's network, in front of the
stand-in Sentifyd served on 127.0.0.1: a signed-in visitor gets tokens, the health check turns
healthy, SIGTERM stops it cleanly, and no test secret is in any layer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.identity.site_cookie import SiteCookieSource
from bridge.settings.loader import load_settings
from bridge.settings.schema import ServerSettings
from support import leaks as support_leaks
from support.config import API_KEY, AVATAR_ID, TEST_ENV, serve_config, write_bridge_toml
from support.live import LiveServer, free_port

# The first run makes the Debian base with debootstrap and downloads the wheels (about four
# minutes); later runs take well under one.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
TAG = "sentifyd-bridge:test"
UID = 10001
MAX_IMAGE_BYTES = 200_000_000
STOP_GRACE = 10  # docker stop -t: seconds between SIGTERM and SIGKILL


def _healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "image_healthcheck", ROOT / "container" / "healthcheck.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the health check's script, without docker -----------------------------------------------


def test_health_check_defaults_are_the_settings_defaults() -> None:
    healthcheck = _healthcheck_module()
    defaults = ServerSettings()
    assert healthcheck.DEFAULT_PORT == defaults.port
    assert healthcheck.DEFAULT_BASE_PATH == str(defaults.base_path)


def test_health_check_follows_the_configs_port_and_base_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_bridge_toml(
        tmp_path / "bridge.toml", server={"port": 9123, "base_path": "/avatar"}
    )
    monkeypatch.setenv("BRIDGE_CONFIG", str(config))
    monkeypatch.delenv("BRIDGE_HEALTHCHECK_URL", raising=False)
    assert _healthcheck_module().health_url() == "http://127.0.0.1:9123/avatar/healthz"


# --- a docker daemon of the test's own --------------------------------------------------------


def _require(tool: str, where: str | None = None) -> str:
    """Return a tool's path; skip only on a developer machine without it, never in CI."""
    found = shutil.which(tool) or (where if where and os.access(where, os.X_OK) else None)
    if found and os.geteuid() == 0:
        return found
    why = f"{tool} is not installed" if not found else "the image test runs as root"
    if os.environ.get("CI"):
        pytest.fail(f"{why}, and CI must run the image test (./scripts/test.sh installs it)")
    pytest.skip(f"{why} (./scripts/test.sh installs docker.io and debootstrap)")


class Docker:
    """dockerd with its own socket, without iptables or a bridge (containers use the host's
    network); its images and build cache kept in .cache/image/docker between runs."""

    def __init__(self) -> None:
        self.run_dir = Path("/run/sentifyd-bridge-test")
        self.host = f"unix://{self.run_dir}/docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": self.host}
        self.cli = _require("docker")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Docker:
        dockerd = _require("dockerd", "/usr/sbin/dockerd")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = ROOT / ".cache" / "image" / "docker"
        data.mkdir(parents=True, exist_ok=True)
        (ROOT / ".cache" / ".gitignore").write_text("*\n")
        log = (ROOT / ".cache" / "image" / "dockerd.log").open("wb")
        self.process = subprocess.Popen(
            [
                dockerd,
                "--iptables=false",
                "--bridge=none",
                f"--data-root={data}",
                f"--exec-root={self.run_dir}/exec",
                f"--pidfile={self.run_dir}/docker.pid",
                f"--host={self.host}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited: see {data.parent / 'dockerd.log'}")
            if self.run("version", check=False).returncode == 0:
                return self
            time.sleep(0.2)  # polling a real external daemon until it answers
        raise RuntimeError("dockerd did not answer within 60 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # dockerd stops its containers and its containerd
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.cli, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {result.stderr}")
        return result

    def inspect(self, what: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.run("inspect", what).stdout)
        return data[0]


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    daemon = Docker().start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def image(docker: Docker) -> str:
    """Build the image as an operator would, with the test secrets in the builder's
    environment (nothing may carry them into a layer)."""
    started = time.monotonic()
    built = subprocess.run(
        [str(ROOT / "scripts" / "image.sh"), TAG],
        env={**docker.env, **TEST_ENV},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    print(f"image built in {time.monotonic() - started:.0f} s")  # shown with -s or on failure
    return TAG


@pytest.fixture(scope="module")
def stand_in() -> Iterator[LiveServer]:
    """The stand-in Sentifyd on the host's 127.0.0.1, which the container shares."""
    server = LiveServer(
        create_fake_sentifyd({API_KEY: AVATAR_ID}, token_ttl=60), server="hypercorn"
    )
    server.start()
    yield server
    server.stop()


class Container:
    def __init__(self, docker: Docker, name: str, port: int, config: Path) -> None:
        self.docker, self.name, self.port, self.config = docker, name, port, config
        self.url = f"http://127.0.0.1:{port}"

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.docker.inspect(self.name)["State"]
        return state

    def wait_serving(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.state()["Running"], self.docker.run("logs", self.name).stderr[-4000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling a real external process until it listens
        raise AssertionError("the container did not start serving within 60 s")

    def logs(self) -> str:
        result = self.docker.run("logs", self.name)
        return result.stdout + result.stderr


def _start(docker: Docker, image: str, stand_in: LiveServer, tmp: Path, name: str) -> Container:
    port = free_port()
    server = {"port": port, "public_url": f"http://127.0.0.1:{port}"}
    config = write_bridge_toml(tmp / "bridge.toml", **serve_config(stand_in.url, server=server))
    config.chmod(0o644)
    docker.run("rm", "--force", name, check=False)
    docker.run(
        "run",
        "--detach",
        f"--name={name}",
        "--network=host",
        "--read-only",
        "--tmpfs=/tmp",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--health-interval=1s",  # the image's own interval (10 s) would make the test wait
        f"--volume={config}:/etc/sentifyd-bridge/bridge.toml:ro",
        # Names only: the values come from this process's environment, not the command line.
        *(f"--env={key}" for key in TEST_ENV),
        image,
        env=dict(TEST_ENV),
    )
    container = Container(docker, name, port, config)
    container.wait_serving()
    return container


@pytest.fixture(scope="module")
def container(
    docker: Docker, image: str, stand_in: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    running = _start(docker, image, stand_in, tmp_path_factory.mktemp("image"), "sb-test-serve")
    yield running
    docker.run("rm", "--force", running.name, check=False)


# --- the running container --------------------------------------------------------------------


def test_a_signed_in_visitor_gets_tokens_through_the_container(
    container: Container, stand_in: LiveServer
) -> None:
    settings = load_settings(container.config, TEST_ENV)
    assert settings.site_cookie is not None
    cookie = str(SiteCookieSource(settings.site_cookie).serializer.dumps({"user_id": "alice"}))
    support_leaks.credential(cookie)
    with httpx.Client(base_url=container.url, timeout=10) as client:
        client.cookies.set("session", cookie)
        first = client.get("/request_tokens")
        assert first.status_code == 200, first.text
        tokens = first.json()["tokens"]
        assert tokens["accessToken"] and tokens["refreshToken"]
        again = client.get("/request_tokens", params={"refreshToken": tokens["refreshToken"]})
        assert again.status_code == 200, again.text
        assert again.json()["tokens"]["refreshToken"] != tokens["refreshToken"]
    assert httpx.get(f"{container.url}/request_tokens", timeout=10).status_code == 401
    assert httpx.get(f"{stand_in.url}/_fake/stats", timeout=5).json()["login_calls"] == 1
    support_leaks.scan(container.logs(), "the container's logs")


def test_the_health_check_turns_healthy(docker: Docker, container: Container) -> None:
    deadline = time.monotonic() + 30
    while (health := container.state()["Health"])["Status"] != "healthy":
        assert time.monotonic() < deadline, health
        time.sleep(0.5)  # docker runs the check every second (--health-interval)
    declared = docker.inspect(TAG)["Config"]["Healthcheck"]["Test"]
    assert declared[-1] == "/opt/sentifyd-bridge/healthcheck.py"


def test_it_runs_as_the_non_root_user_on_a_read_only_root(
    docker: Docker, container: Container
) -> None:
    assert docker.inspect(TAG)["Config"]["User"] == f"{UID}:{UID}"
    pid = container.state()["Pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(UID)] * 4
    assert docker.inspect(container.name)["HostConfig"]["ReadonlyRootfs"] is True
    write = docker.run("exec", container.name, "touch", "/opt/sentifyd-bridge/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    assert docker.run("exec", container.name, "touch", "/tmp/x", check=False).returncode == 0


def test_sigterm_stops_it_cleanly_within_the_grace_time(
    docker: Docker, image: str, stand_in: LiveServer, tmp_path: Path
) -> None:
    stopping = _start(docker, image, stand_in, tmp_path, "sb-test-stop")
    try:
        started = time.monotonic()
        docker.run("stop", f"--time={STOP_GRACE}", stopping.name, timeout=STOP_GRACE + 30)
        elapsed = time.monotonic() - started
        state = stopping.state()
        assert state["ExitCode"] == 0, stopping.logs()[-4000:]
        assert not state["OOMKilled"]
        assert elapsed < STOP_GRACE - 1, f"took {elapsed:.1f} s: SIGKILL, not SIGTERM, ended it"
        lines = [json.loads(line) for line in stopping.logs().splitlines() if line.startswith("{")]
        assert not [line for line in lines if line["level"] in ("warning", "error")]
    finally:
        docker.run("rm", "--force", stopping.name, check=False)


# --- the image itself -------------------------------------------------------------------------


def test_the_image_is_small(docker: Docker, image: str) -> None:
    size = docker.inspect(image)["Size"]
    assert size <= MAX_IMAGE_BYTES, f"{size / 1e6:.0f} MB"


def test_no_layer_holds_a_test_secret(docker: Docker, image: str) -> None:
    secrets = {name: value.encode() for name, value in TEST_ENV.items()}
    history = docker.run("history", "--no-trunc", image).stdout
    config = docker.run("image", "inspect", image).stdout
    for text, where in ((history, "docker history"), (config, "docker image inspect")):
        assert not [name for name, value in secrets.items() if value.decode() in text], where
    # docker save writes every layer's files uncompressed: one pass over its bytes reads them all,
    # files deleted by a later layer included.
    overlap = max(len(value) for value in secrets.values()) - 1
    tail, found, total = b"", set(), 0
    with subprocess.Popen(
        [docker.cli, "save", image], env=docker.env, stdout=subprocess.PIPE
    ) as save:
        assert save.stdout
        while chunk := save.stdout.read(1 << 20):
            window = tail + chunk
            found.update(name for name, value in secrets.items() if value in window)
            tail, total = window[-overlap:], total + len(chunk)
    assert save.returncode == 0
    assert total > 10_000_000, "docker save wrote next to nothing"
    assert not found, f"the values of {sorted(found)} are in the image's layers"
