"""The bridge's configuration for tests: the test secrets (``TEST_ENV``), the base configuration
every test starts from and ``make_settings``, which loads it with a test's overrides."""

from __future__ import annotations

from typing import Any

from bridge.settings.loader import load_settings
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
