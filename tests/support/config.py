"""The bridge's configuration for tests: the test secrets (``TEST_ENV``), the base configuration
every in-process test starts from and ``make_settings``, which loads it with a test's overrides;
``serve_config``, what a ``sentifyd-bridge serve`` process of the tests runs with; and
``write_bridge_toml``, the one writer of the bridge's TOML file for tests."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.settings.loader import _deep_merge, load_settings
from bridge.settings.schema import Settings
from support import leaks as support_leaks

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


# The test avatar, and the site's Flask login cookie the tests sign in with.
DEFAULT_AVATAR = {"name": "default", "avatar_id": AVATAR_ID, "api_key_env": "AVATAR_API_KEY"}
PREMIUM_AVATAR = {
    "name": "premium",
    "avatar_id": PREMIUM_ID,
    "api_key_env": "PREMIUM_AVATAR_API_KEY",
}
LOGIN_COOKIE = {
    "name": "session",
    "format": "flask",
    "secret_key_env": "SITE_SECRET_KEY",
    "max_age": 3600,
    "user_field": "user_id",
    "login_url": "https://shop.example.com/login?next={next}",
}


def base_config() -> dict[str, Any]:
    return {
        "server": {"public_url": PUBLIC_URL},
        "session": {"cookie_secure": False, "refresh_grace": 10},
        "sentifyd": {"backend": "http://127.0.0.1:9", "retry_backoff": 0.01, "timeout": 2},
        "avatars": [
            dict(DEFAULT_AVATAR),
            {
                "name": "premium",
                "avatar_id": PREMIUM_ID,
                "api_key_env": "PREMIUM_AVATAR_API_KEY",
                "allow": {"groups": ["customers"]},
            },
        ],
        "login": {
            "cookie": {**LOGIN_COOKIE, "claim_fields": ["email", "groups", "email_verified"]}
        },
    }


def make_settings(
    overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> Settings:
    data = _deep_merge(base_config(), overrides or {})
    return load_settings(None, {**TEST_ENV, **(env or {})}, overrides=data)


# --- the bridge's TOML file -------------------------------------------------------------------


def serve_config(backend: str = "http://127.0.0.1:9", **sections: Any) -> dict[str, Any]:
    """What a ``sentifyd-bridge serve`` process of the tests runs with: plain HTTP on the default
    host (127.0.0.1), the test avatar, the site's Flask login cookie and Sentifyd at ``backend``;
    each of ``sections`` (``store={"url": ...}``, ``session={"max_chains": 4}``, ...) merged
    over it, a list (``avatars``) replacing the one here."""
    config = {
        "server": {"public_url": PUBLIC_URL},
        "session": {"cookie_secure": False},
        "sentifyd": {"backend": backend},
        "avatars": [dict(DEFAULT_AVATAR)],
        "login": {"cookie": dict(LOGIN_COOKIE)},
    }
    return _deep_merge(config, sections)


def write_bridge_toml(path: Path, **sections: Any) -> Path:
    """Write the bridge's configuration file: each keyword a top-level table (a dict), an array
    of tables (a list of dicts) or a value. Returns ``path``."""
    path.write_text(toml_text(sections))
    return path


def toml_text(document: Mapping[str, Any]) -> str:
    """``document`` as TOML. Dicts are tables, non-empty lists of dicts arrays of tables; values
    are str (or a path), int, float, bool and lists of them (dicts inside a list are inline
    tables). There is no null in TOML: ``None`` is refused, not left out."""
    lines: list[str] = []
    _table(lines, (), document, array=False)
    return "\n".join(lines).strip("\n") + "\n"


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(item, Mapping) for item in value)
    )


def _table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any], array: bool) -> None:
    nested = {k: v for k, v in table.items() if isinstance(v, Mapping) or _is_table_array(v)}
    plain = {k: v for k, v in table.items() if k not in nested}
    if path and (array or plain or not nested):  # a table of tables needs no header of its own
        header = ".".join(_key(part) for part in path)
        lines += ["", f"[[{header}]]" if array else f"[{header}]"]
    lines += [f"{_key(key)} = {_value(value)}" for key, value in plain.items()]
    for key, value in nested.items():
        if isinstance(value, Mapping):
            _table(lines, (*path, key), value, array=False)
        else:
            for item in value:
                _table(lines, (*path, key), item, array=True)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a TOML key is a string, not {key!r}")
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    escaped = "".join(
        _ESCAPES.get(char)
        or (f"\\u{ord(char):04X}" if ord(char) < 0x20 or ord(char) == 0x7F else char)
        for char in text
    )
    return f'"{escaped}"'


def _value(value: Any) -> str:
    if isinstance(value, bool):  # before int: a bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # always with a "." or an exponent: a TOML float
    if isinstance(value, str | os.PathLike):
        return _string(os.fspath(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")
