"""The command line: real processes for serve, demo, fake-sentifyd and check-config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.config import API_KEY, BRIDGE_KEY, SITE_KEY, make_settings
from support.live import free_port

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "sentifyd-bridge")
pytestmark = pytest.mark.integration


def wait_until_up(url: str, proc: subprocess.Popen[bytes], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.communicate(timeout=10)  # also closes the pipes
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def spawn(
    procs: list[subprocess.Popen[bytes]], *args: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [CLI, *args], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    procs.append(proc)
    return proc


def test_serve_against_the_standalone_fake(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    fake_port, bridge_port = free_port(), free_port()
    env = {"AVATAR_API_KEY": API_KEY, "BRIDGE_SECRET_KEY": BRIDGE_KEY, "SITE_SECRET_KEY": SITE_KEY}
    fake = spawn(processes, "fake-sentifyd", "--port", str(fake_port), "--token-ttl", "30", env=env)
    config = tmp_path / "bridge.toml"
    config.write_text(
        (ROOT / "config" / "bridge.example.toml")
        .read_text()
        .replace(
            'public_url = "https://avatar.example.com"', 'public_url = "http://127.0.0.1:8000"'
        )
        .replace("cookie_secure = true", "cookie_secure = false")
        .replace(
            'backend = "https://serve.sentifyd.io"', f'backend = "http://127.0.0.1:{fake_port}"'
        )
        .replace('allow = { groups = ["customers"] }            # example;', "# ")
    )
    bridge = spawn(processes, "serve", "--config", str(config), "--port", str(bridge_port), env=env)
    wait_until_up(f"http://127.0.0.1:{fake_port}/_fake/stats", fake)
    wait_until_up(f"http://127.0.0.1:{bridge_port}/healthz", bridge)

    settings = make_settings()
    from bridge.identity.site_cookie import SiteCookieSource

    assert settings.site_cookie is not None
    cookie = str(SiteCookieSource(settings.site_cookie).serializer.dumps({"user_id": "alice"}))
    with httpx.Client(base_url=f"http://127.0.0.1:{bridge_port}") as client:
        client.cookies.set("session", cookie, domain="127.0.0.1")
        response = client.get("/request_tokens")
        assert response.status_code == 200, response.text
        assert response.json()["tokens"]["tokenType"] == "Bearer"
    stats = httpx.get(f"http://127.0.0.1:{fake_port}/_fake/stats").json()
    assert stats["login_calls"] == 1

    bridge.terminate()
    _, err = bridge.communicate(timeout=10)
    # A clean shutdown: uvicorn finishes, then re-raises SIGTERM so the exit status says why
    # (systemd counts that as success); hypercorn returns normally.
    assert bridge.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in err.decode()
    assert API_KEY not in err.decode() and SITE_KEY not in err.decode()
    assert '"msg":"serving"' in err.decode()


def test_serve_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("BRIDGE_SECRET_KEY", "AVATAR_API_KEY")}
    result = subprocess.run(
        [CLI, "serve", "--config", str(ROOT / "config" / "bridge.example.toml")],
        env={**env, "SITE_SECRET_KEY": SITE_KEY, "AVATAR_API_KEY": API_KEY},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.decode()
        .strip()
        .endswith("BRIDGE_SECRET_KEY: not set (the bridge's own signing key, 32+ characters)")
    )
    assert "Traceback" not in result.stderr.decode()


def test_check_config_masks_secrets() -> None:
    env = {
        **os.environ,
        "AVATAR_API_KEY": API_KEY,
        "BRIDGE_SECRET_KEY": BRIDGE_KEY,
        "SITE_SECRET_KEY": SITE_KEY,
    }
    result = subprocess.run(
        [CLI, "check-config", "--config", str(ROOT / "config" / "bridge.example.toml")],
        env=env,
        capture_output=True,
        timeout=30,
        check=True,
    )
    out = result.stdout.decode()
    effective = json.loads(out)
    assert effective["avatars"][0]["api_key"] == "********"
    for secret in (API_KEY, BRIDGE_KEY, SITE_KEY):
        assert secret not in out


def test_check_config_fails_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    result = subprocess.run(
        [CLI, "check-config", "--config", str(bad)], capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 2 and "not valid TOML" in result.stderr.decode()


def test_demo_command_serves_the_first_look(processes: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    demo = spawn(processes, "demo", "--port", str(port), env={})
    wait_until_up(f"http://127.0.0.1:{port}/healthz", demo)
    response = httpx.get(f"http://127.0.0.1:{port}/")
    assert response.status_code == 302 and response.headers["location"] == "/demo/login?next=/"
    assert httpx.get(f"http://127.0.0.1:{port}/demo/login").status_code == 200


def test_demo_prints_how_to_open_the_console_with_a_token_that_signs_in(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    demo = spawn(processes, "demo", "--port", str(port), env={})
    wait_until_up(f"http://127.0.0.1:{port}/healthz", demo)
    assert demo.stdout is not None
    lines = [demo.stdout.readline().decode().strip() for _ in range(4)]
    assert lines[1] == f"the shop's 'my devices' page: http://127.0.0.1:{port}/account/sessions" + (
        " (once signed in)"
    )
    assert lines[2].startswith(f"the operator console: http://127.0.0.1:{port}/admin/")
    token = lines[3]
    base = f"http://127.0.0.1:{port}"
    own = {"Origin": base}
    signed_in = httpx.post(f"{base}/admin/sign-in", data={"token": token}, headers=own)
    assert signed_in.status_code == 303 and "set-cookie" in signed_in.headers
    refused = httpx.post(f"{base}/admin/sign-in", data={"token": token[:-1]}, headers=own)
    assert refused.status_code == 401
    # A fresh token each run: another demo's does not open this one.
    other = spawn(processes, "demo", "--port", str(free_port()), env={})
    assert other.stdout is not None
    assert [other.stdout.readline() for _ in range(4)][3].decode().strip() != token


def test_port_in_use_is_one_clear_line(processes: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    first = spawn(processes, "demo", "--port", str(port), env={})
    wait_until_up(f"http://127.0.0.1:{port}/healthz", first)
    result = subprocess.run(
        [CLI, "demo", "--port", str(port)], capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr.decode()
