"""Settings: TOML plus environment, secure defaults, one clear line per wrong setting."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import ConfigError
from bridge.settings import report as config_report
from bridge.settings.loader import load_settings
from support.config import API_KEY, BRIDGE_KEY, SITE_KEY, TEST_ENV, make_settings

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_loads_with_its_secrets() -> None:
    settings = load_settings(ROOT / "config" / "bridge.example.toml", TEST_ENV)
    assert settings.server.public_url == "https://avatar.example.com"
    assert settings.session.cookie_secure is True
    assert settings.session.effective_cookie_name.startswith("__Host-")
    assert settings.avatars[0].api_key.reveal() == API_KEY
    assert settings.site_cookie is not None and settings.site_cookie.format == "flask"


def test_demo_config_loads() -> None:
    settings = load_settings(ROOT / "config" / "demo.toml", TEST_ENV)
    assert settings.demo and settings.store.url == "memory://"


def test_bridge_config_env_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text((ROOT / "config" / "bridge.example.toml").read_text())
    settings = load_settings(None, {**TEST_ENV, "BRIDGE_CONFIG": str(path)})
    assert settings.source == str(path)


@pytest.mark.parametrize(
    ("env_name", "value", "check"),
    [
        (
            "SENTIFYD_BACKEND",
            "https://other.sentifyd.test",
            lambda s: s.sentifyd.backend == "https://other.sentifyd.test",
        ),
        (
            "BRIDGE_STORE_URL",
            "redis://127.0.0.1:6390/2",
            lambda s: s.store.url == "redis://127.0.0.1:6390/2",
        ),
        ("AVATAR_ID", "avtr_from_env", lambda s: s.avatars[0].avatar_id == "avtr_from_env"),
    ],
)
def test_environment_overrides_toml(env_name: str, value: str, check: Any) -> None:
    assert check(make_settings(env={env_name: value}))


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("BRIDGE_SECRET_KEY", "BRIDGE_SECRET_KEY"),
        ("AVATAR_API_KEY", "AVATAR_API_KEY"),
        ("SITE_SECRET_KEY", "SITE_SECRET_KEY"),
    ],
)
def test_missing_secret_stops_startup_naming_it(missing: str, named: str) -> None:
    env = {k: v for k, v in TEST_ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=named):
        load_settings(ROOT / "config" / "bridge.example.toml", env)


@pytest.mark.parametrize(
    ("overrides", "env", "named"),
    [
        ({"server": {"public_url": "http://avatar.example.com"}}, {}, "server.public_url"),
        ({"server": {"public_url": "https://a.example.com/path"}}, {}, "server.public_url"),
        (
            {
                "server": {"public_url": "https://a.example.com"},
                "session": {"cookie_secure": False},
            },
            {},
            "session.cookie_secure",
        ),
        ({"session": {"idle_timeout": 50000}}, {}, "session.idle_timeout"),
        ({"session": {"idle_timeout": "soon"}}, {}, "session.idle_timeout"),
        ({"sentifyd": {"backend": "http://serve.sentifyd.io"}}, {}, "sentifyd.backend"),
        ({"sentifyd": {"login_path": "api/login"}}, {}, "sentifyd.login_path"),
        ({"store": {"url": "postgres://x"}}, {}, "store.url"),
        ({"server": {"surprise": 1}}, {}, "server.surprise"),
        ({"login": {"cookie": {"format": "php"}}}, {}, "login.cookie.format"),
        (
            {"avatars": [{"name": "a", "avatar_id": "x", "allow": {"group": ["c"]}}]},
            {},
            "avatars[0].allow.group",
        ),
        ({"server": {"trusted_proxies": ["not-an-ip"]}}, {}, "server.trusted_proxies"),
        ({}, {"BRIDGE_SECRET_KEY": "short"}, "BRIDGE_SECRET_KEY"),
    ],
)
def test_unsafe_or_wrong_settings_stop_startup(
    overrides: dict[str, Any], env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(overrides, env)
    message = str(info.value)
    assert message.startswith(named) and "\n" not in message


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", TEST_ENV)


def test_secret_key_list_rotation_newest_first() -> None:
    old = "old-bridge-key-0123456789abcdef0123456789"
    settings = make_settings(env={"BRIDGE_SECRET_KEY": f"{BRIDGE_KEY},{old}"})
    assert [k.reveal() for k in settings.secret_keys] == [BRIDGE_KEY, old]


def test_masked_settings_show_no_secret() -> None:
    text = json.dumps(config_report.masked(make_settings()))
    for secret in (API_KEY, SITE_KEY, BRIDGE_KEY):
        assert secret not in text
    assert "********" in text


def test_secret_never_formats() -> None:
    settings = make_settings()
    key = settings.avatars[0].api_key
    assert API_KEY not in f"{key} {key!r} {settings!r} {settings.avatars}"


def test_settings_import_nothing_from_the_domain() -> None:
    # Settings are the bottom layer: the domain reads them, never the reverse.
    allowed = {"bridge.errors", "bridge.secret"}
    for module in sorted((ROOT / "bridge" / "settings").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name == "bridge" or name.startswith("bridge."):
                    assert name in allowed or name.startswith("bridge.settings"), (module, name)


def test_a_section_built_in_code_is_checked_too() -> None:
    from bridge.settings.schema import StoreSettings

    assert StoreSettings(url="redis://127.0.0.1:6390/2").address is not None
    with pytest.raises(ConfigError, match="^url: "):
        StoreSettings(url="postgres://x")
