"""The operator CLI: sessions list|show|revoke, events, check-config, on the configured store.

Most tests inject the store a bridge app is using (``main(..., store=...)``), which is how the
CLI sees a server's sessions without a shared Redis. One test runs the CLI against a real
redis-server and a bridge app on the same Redis, when the Redis store is present.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from bridge.app import create_app
from bridge.cli import main
from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.settings.loader import load_settings
from bridge.store.base import Store
from bridge.store.memory import MemoryStore
from bridge.wiring import Bridge
from support.app import login
from support.config import (
    API_KEY,
    AVATAR_ID,
    DEFAULT_AVATAR,
    PREMIUM_API_KEY,
    PREMIUM_AVATAR,
    PREMIUM_ID,
    TEST_ENV,
    serve_config,
    write_bridge_toml,
)
from support.live import free_port


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("BRIDGE_CONFIG", "BRIDGE_STORE_URL", "SENTIFYD_BACKEND", "BRIDGE_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def write_config(tmp_path: Path, store: str = "memory://", **sections: Any) -> str:
    config = serve_config(
        store={"url": store}, avatars=[DEFAULT_AVATAR, PREMIUM_AVATAR], **sections
    )
    return str(write_bridge_toml(tmp_path / "bridge.toml", **config))


def visit(config: str, store: Store | None, users: list[tuple[str, str]]) -> None:
    """Have each (user, avatar path) fetch tokens from a bridge app on ``store``."""

    async def run() -> None:
        fake = create_fake_sentifyd({API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID})
        app: Quart = create_app(
            load_settings(config), store=store, sentifyd_transport=httpx.ASGITransport(app=fake)
        )
        async with app.test_app():
            for user, path in users:
                client = app.test_client()
                login(client, app, user)
                response = await client.get(path)
                assert response.status_code == 200, await response.get_data()

    asyncio.run(run())


def run_cli(
    capsys: pytest.CaptureFixture[str], *argv: str, store: Store | None = None
) -> tuple[int, Any, str]:
    code = main(list(argv), store=store)
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


@pytest.fixture
def memory(env: None, tmp_path: Path) -> tuple[str, MemoryStore]:
    config = write_config(tmp_path)
    store = MemoryStore()
    visit(config, store, [("alice", "/request_tokens"), ("alice", "/request_tokens/premium"),
                          ("bob", "/request_tokens")])  # fmt: skip
    return config, store


def test_sessions_list(memory: tuple[str, MemoryStore], capsys: Any) -> None:
    config, store = memory
    code, page, _ = run_cli(capsys, "sessions", "list", "--config", config, store=store)
    assert code == 0
    assert sorted(s["user"] for s in page["sessions"]) == ["alice", "alice", "bob"]
    assert page["next_cursor"] is None
    code, page, _ = run_cli(
        capsys, "sessions", "list", "--config", config, "--avatar", "premium", store=store
    )
    assert [s["user"] for s in page["sessions"]] == ["alice"]
    code, page, _ = run_cli(
        capsys, "sessions", "list", "bob", "--config", config, "--limit", "1", store=store
    )
    assert [s["user"] for s in page["sessions"]] == ["bob"]


def test_sessions_list_pages(memory: tuple[str, MemoryStore], capsys: Any) -> None:
    config, store = memory
    _, first, _ = run_cli(capsys, "sessions", "list", "--config", config, "--limit", "2",
                          store=store)  # fmt: skip
    assert len(first["sessions"]) == 2 and first["next_cursor"]
    _, rest, _ = run_cli(
        capsys, "sessions", "list", "--config", config, "--cursor", first["next_cursor"],
        store=store,
    )  # fmt: skip
    assert len(rest["sessions"]) == 1 and rest["next_cursor"] is None


def test_sessions_show(memory: tuple[str, MemoryStore], capsys: Any) -> None:
    config, store = memory
    code, body, _ = run_cli(capsys, "sessions", "show", "alice", "--config", config, store=store)
    assert code == 0 and body["user"] == "alice" and len(body["sessions"]) == 2
    assert {e["event"] for e in body["events"]} == {"session_started", "tokens_issued"}


def test_sessions_revoke(memory: tuple[str, MemoryStore], capsys: Any) -> None:
    config, store = memory
    code, body, _ = run_cli(
        capsys, "sessions", "revoke", "alice", "--config", config, "--block", "120", store=store
    )
    assert code == 0 and body["ended"] == 2 and body["blocked_until"]
    _, page, _ = run_cli(capsys, "sessions", "list", "--config", config, store=store)
    assert [s["user"] for s in page["sessions"]] == ["bob"]
    _, events, _ = run_cli(capsys, "events", "alice", "--config", config, store=store)
    ended = [e for e in events if e["event"] == "session_ended"]
    assert len(ended) == 2
    assert all(e["reason"] == "admin_revoked" and e["by"] == "cli" for e in ended)


def test_events(memory: tuple[str, MemoryStore], capsys: Any) -> None:
    config, store = memory
    code, events, _ = run_cli(
        capsys, "events", "bob", "--config", config, "--limit", "1", store=store
    )
    assert code == 0 and [e["event"] for e in events] == ["tokens_issued"]


def test_output_carries_no_secret(memory: tuple[str, MemoryStore], capsys: Any) -> None:
    config, store = memory
    stored = [json.loads(v) for k, v in store.snapshot().items() if ":session:" in k]
    hidden = [r["sealed"] for r in stored] + [c["current"] for r in stored for c in r["chains"]]
    assert len(hidden) == 6  # three sessions, each with sealed tokens and one chain
    for argv in (["sessions", "list"], ["sessions", "show", "alice"], ["events", "alice"]):
        main([*argv, "--config", config], store=store)
        out = capsys.readouterr().out
        for secret in [API_KEY, PREMIUM_API_KEY, *TEST_ENV.values(), *hidden]:
            assert secret not in out


def test_memory_store_is_refused_clearly(env: None, tmp_path: Path, capsys: Any) -> None:
    config = write_config(tmp_path)
    for argv in (["sessions", "list"], ["sessions", "revoke", "alice"], ["events", "alice"]):
        code = main([*argv, "--config", config])
        err = capsys.readouterr().err
        assert code == 2
        assert "memory://" in err and "admin API" in err and "Redis" in err


def test_show_and_revoke_need_a_user(memory: tuple[str, MemoryStore], capsys: Any) -> None:
    config, store = memory
    assert main(["sessions", "revoke", "--config", config], store=store) == 2
    assert "needs a USER" in capsys.readouterr().err


def test_check_config_prints_masked_config(env: None, tmp_path: Path, capsys: Any) -> None:
    config = write_config(tmp_path)
    code = main(["check-config", "--config", config])
    out = capsys.readouterr().out
    assert code == 0
    effective = json.loads(out)
    assert effective["avatars"][0]["api_key"] == "********"
    assert effective["limits"]["per_session"] == {"count": 120, "window": 60}
    for secret in TEST_ENV.values():
        assert secret not in out


@pytest.mark.parametrize(
    ("extra", "env_name", "message"),
    [
        ({"limits": {"per_ip": "lots"}}, None, "limits.per_ip"),
        ({"lifecycle": {"max_events": 0}}, None, "lifecycle.max_events"),
        ({}, "BRIDGE_ADMIN_TOKEN", "BRIDGE_ADMIN_TOKEN"),
        ({"metrics": {"open": True}}, None, "metrics.open"),
    ],
)
def test_check_config_fails_on_errors(
    env: None,
    tmp_path: Path,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    extra: dict[str, Any],
    env_name: str | None,
    message: str,
) -> None:
    config = write_config(tmp_path, **extra)
    if env_name:
        monkeypatch.setenv(env_name, "short")
    code = main(["check-config", "--config", config])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert message in captured.err and "short" not in captured.err


def test_check_config_fails_on_a_missing_file(env: None, tmp_path: Path, capsys: Any) -> None:
    assert main(["check-config", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "not found" in capsys.readouterr().err


# --- against a real Redis ---------------------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        pytest.fail("redis-server is not installed (./scripts/test.sh installs it)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:  # bounded polling of a real external process
            try:
                import socket

                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.integration
def test_cli_on_redis_sees_and_revokes_a_servers_sessions(
    env: None, tmp_path: Path, capsys: Any, redis_url: str
) -> None:
    config = write_config(tmp_path, redis_url)
    visit(config, None, [("alice", "/request_tokens"), ("bob", "/request_tokens")])
    code, page, _ = run_cli(capsys, "sessions", "list", "--config", config)
    assert code == 0 and sorted(s["user"] for s in page["sessions"]) == ["alice", "bob"]
    code, body, _ = run_cli(capsys, "sessions", "revoke", "alice", "--config", config)
    assert code == 0 and body["ended"] == 1
    code, events, _ = run_cli(capsys, "events", "alice", "--config", config)
    assert events[0]["reason"] == "admin_revoked"

    async def next_request() -> int:
        # Another bridge instance on the same Redis: alice is blocked there too.
        app = create_app(load_settings(config))
        async with app.test_app():
            client = app.test_client()
            login(client, app, "alice")
            assert await Bridge.of(app).sessions.blocked_until("alice") is not None
            return (await client.get("/request_tokens")).status_code

    assert asyncio.run(next_request()) == 401


def test_cli_reports_an_unreachable_store(env: None, tmp_path: Path, capsys: Any) -> None:
    config = write_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    assert main(["sessions", "list", "--config", config]) == 1
    assert "store is unavailable" in capsys.readouterr().err
