"""SIGHUP reloads ``sentifyd-bridge serve``'s settings in the running process
(bridge/wiring/reload.py): a new avatar is served by the same PID while a session keeps
refreshing, a broken file changes nothing, a key rotated in its secret file is used without a
restart, and on two instances sharing Redis a reload of one leaves sessions working on both."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.doubles.fake_sentifyd import create_fake_sentifyd, key_fingerprint
from bridge.errors import ConfigError
from support import leaks as support_leaks
from support.config import (
    API_KEY,
    AVATAR_ID,
    DEFAULT_AVATAR,
    PREMIUM_API_KEY,
    PREMIUM_AVATAR,
    PREMIUM_ID,
    make_settings,
    serve_config,
    write_bridge_toml,
)
from support.live import LiveServer
from support.redis import COOKIE, BridgeProcess, RedisServer, Visitor, new_cookie, start_all

pytestmark = pytest.mark.integration

ROTATED_KEY = "sk-test-rotated-avatar-key-00112233445566"
support_leaks.always(ROTATED_KEY)


def write_config(
    path: Path,
    *,
    backend: str,
    store_url: str = "memory://",
    premium: bool = False,
    max_chains: object = 8,
    head_timeout: float = 20,
    base_path: str = "",
) -> None:
    server: dict[str, object] = {"head_timeout": head_timeout}
    if base_path:
        server["base_path"] = base_path
    write_bridge_toml(
        path,
        **serve_config(
            backend,
            server=server,
            session={"max_chains": max_chains},
            store={"url": store_url},
            avatars=[DEFAULT_AVATAR, PREMIUM_AVATAR] if premium else [DEFAULT_AVATAR],
            logging={"level": "INFO"},
        ),
    )


def log_lines(bridge: BridgeProcess, message: str) -> list[dict[str, object]]:
    lines = []
    for line in bridge.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("msg", "").startswith(message):
            lines.append(record)
    return lines


async def hang_up(bridge: BridgeProcess, message: str) -> dict[str, object]:
    """Send SIGHUP and wait for the next log line starting with ``message``."""
    assert bridge.process is not None
    seen = len(log_lines(bridge, message))
    bridge.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = log_lines(bridge, message)
        if len(lines) > seen:
            return lines[-1]
        assert bridge.process.poll() is None, bridge.log()[-2000:]
        await asyncio.sleep(0.05)  # a real process's log, polled with a bound
    raise AssertionError(f"no {message!r} line after SIGHUP:\n{bridge.log()[-2000:]}")


async def premium_tokens(
    http: httpx.AsyncClient, bridge: BridgeProcess, visitor: Visitor
) -> httpx.Response:
    """The second avatar's tokens for ``visitor``, in their bridge session."""
    cookies = [f"session={visitor.site_cookie}", f"{COOKIE}={visitor.session}"]
    return await http.get(
        f"{bridge.url}/request_tokens/premium", headers={"Cookie": "; ".join(cookies)}
    )


@pytest.fixture
def sentifyd() -> Iterator[LiveServer]:
    keys = {API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID, ROTATED_KEY: AVATAR_ID}
    server = LiveServer(create_fake_sentifyd(keys, token_ttl=3600)).start()
    yield server
    server.stop()


@pytest.fixture
def bridge(tmp_path: Path, sentifyd: LiveServer) -> Iterator[BridgeProcess]:
    config = tmp_path / "bridge.toml"
    write_config(config, backend=sentifyd.url)
    process = BridgeProcess(tmp_path, "bridge", config_path=config).start()
    try:
        yield process
    finally:
        process.stop()


async def test_sighup_adds_an_avatar_in_the_same_process_while_a_session_refreshes(
    bridge: BridgeProcess, sentifyd: LiveServer
) -> None:
    assert bridge.process is not None
    pid = bridge.process.pid
    visitor = Visitor("alice")
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await visitor.tokens(http, bridge)).status_code == 200
        premium = await http.get(f"{bridge.url}/request_tokens/premium")
        assert premium.status_code == 404

        refreshing = True
        statuses: list[int] = []

        async def keep_refreshing() -> None:
            while refreshing:
                answer = await visitor.tokens(http, bridge, visitor.handles[-1])
                statuses.append(answer.status_code)
                await asyncio.sleep(0.1)  # a component's pace, within the per-session limit

        refresher = asyncio.ensure_future(keep_refreshing())
        try:
            await asyncio.sleep(0.2)
            # The server's settings are bound at start: named, not applied.
            write_config(
                bridge.config_path,
                backend=sentifyd.url,
                premium=True,
                head_timeout=15,
                base_path="/moved",
            )
            reloaded = await hang_up(bridge, "reloaded")
            await asyncio.sleep(0.2)
        finally:
            refreshing = False
            await refresher
        assert reloaded["avatars"] == ["default", "premium"]
        assert reloaded["restart_needed"] == ["server"]
        assert len(statuses) > 2 and set(statuses) == {200}, statuses

        assert (await visitor.tokens(http, bridge, visitor.handles[-1])).status_code == 200
        premium = await premium_tokens(http, bridge, visitor)
        assert premium.status_code == 200, premium.text
        assert not new_cookie(premium)  # the same bridge session, not a new one
        anonymous = await http.get(f"{bridge.url}/request_tokens")
        assert anonymous.status_code == 401
        assert "moved" not in anonymous.json()["login_url"]  # still served at the old base path
    assert bridge.process.poll() is None and bridge.process.pid == pid
    state = sentifyd.app.extensions["fake_sentifyd"]
    assert state.calls_by_key[key_fingerprint(PREMIUM_API_KEY)] == 1
    assert state.calls_by_key[key_fingerprint(API_KEY)] == 1  # the session's tokens were kept


async def test_a_broken_file_changes_nothing_and_one_line_names_the_setting(
    bridge: BridgeProcess, sentifyd: LiveServer
) -> None:
    visitor = Visitor("alice")
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await visitor.tokens(http, bridge)).status_code == 200
        write_config(bridge.config_path, backend=sentifyd.url, premium=True, max_chains="many")
        refused = await hang_up(bridge, "reload refused")
        assert "session.max_chains" in str(refused["error"])
        assert len(log_lines(bridge, "reload")) == 1  # one line, and no "reloaded"

        assert (await visitor.tokens(http, bridge, visitor.handles[-1])).status_code == 200
        assert (await Visitor("bob").tokens(http, bridge)).status_code == 200
        assert (await premium_tokens(http, bridge, visitor)).status_code == 404

        # The same process reloads a mended file.
        write_config(bridge.config_path, backend=sentifyd.url, premium=True)
        await hang_up(bridge, "reloaded")
        assert (await premium_tokens(http, bridge, visitor)).status_code == 200


async def test_a_key_rotated_in_its_secret_file_is_used_after_sighup(
    tmp_path: Path, sentifyd: LiveServer
) -> None:
    key_file = tmp_path / "avatar_api_key"
    key_file.write_text(API_KEY + "\n")
    config = tmp_path / "bridge.toml"
    write_config(config, backend=sentifyd.url)
    env = {"AVATAR_API_KEY": "", "AVATAR_API_KEY_FILE": str(key_file)}
    bridge = BridgeProcess(tmp_path, "bridge", config_path=config, env=env).start()
    state = sentifyd.app.extensions["fake_sentifyd"]
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            alice = Visitor("alice")
            assert (await alice.tokens(http, bridge)).status_code == 200
            key_file.write_text(ROTATED_KEY + "\n")
            await hang_up(bridge, "reloaded")
            assert (await Visitor("bob").tokens(http, bridge)).status_code == 200
            assert (await alice.tokens(http, bridge, alice.handles[-1])).status_code == 200
    finally:
        bridge.stop()
    assert state.calls_by_key == {key_fingerprint(API_KEY): 1, key_fingerprint(ROTATED_KEY): 1}


async def test_reloading_one_of_two_instances_on_redis_keeps_sessions_working_on_both(
    tmp_path: Path, sentifyd: LiveServer
) -> None:
    redis = RedisServer(tmp_path).start()
    bridges = []
    try:
        for name in ("a", "b"):
            config = tmp_path / f"{name}.toml"
            write_config(config, backend=sentifyd.url, store_url=redis.url)
            bridges.append(BridgeProcess(tmp_path, name, config_path=config))
        start_all(bridges)
        a, b = bridges
        visitor = Visitor("alice")
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await visitor.tokens(http, a)).status_code == 200
            assert (await visitor.tokens(http, b, visitor.handles[-1])).status_code == 200
            write_config(a.config_path, backend=sentifyd.url, store_url=redis.url, premium=True)
            await hang_up(a, "reloaded")
            for one in (a, b, a):
                answer = await visitor.tokens(http, one, visitor.handles[-1])
                assert answer.status_code == 200, (one.name, answer.text)
            assert (await premium_tokens(http, a, visitor)).status_code == 200
            assert (await premium_tokens(http, b, visitor)).status_code == 404
            assert (await visitor.tokens(http, b)).status_code == 200  # a new tab, on b
    finally:
        for one in bridges:
            one.stop()
        redis.stop()


def test_a_secret_variable_may_name_a_file_and_an_unreadable_one_is_named(tmp_path: Path) -> None:
    key_file = tmp_path / "site_key"
    key_file.write_text(f"{ROTATED_KEY}\n")
    settings = make_settings(env={"SITE_SECRET_KEY": "", "SITE_SECRET_KEY_FILE": str(key_file)})
    assert settings.site_cookie is not None
    assert [k.reveal() for k in settings.site_cookie.secret_keys] == [ROTATED_KEY]
    missing = {"SITE_SECRET_KEY": "", "SITE_SECRET_KEY_FILE": str(tmp_path / "gone")}
    with pytest.raises(ConfigError, match=r"^SITE_SECRET_KEY_FILE: cannot read"):
        make_settings(env=missing)
