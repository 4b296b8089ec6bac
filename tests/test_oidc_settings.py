"""Settings for single sign-on: [login.oidc], [login.oidc.<name>], and what start-up refuses."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.errors import ConfigError
from bridge.settings import report as config_report
from bridge.settings.loader import load_settings
from bridge.settings.schema import Settings
from support.config import TEST_ENV, base_config
from support.oidc import OIDC_ENV, OP_CLIENT_SECRET

PROVIDER = {"issuer": "https://id.example.com/realms/shop", "client_id": "bridge"}


def load(oidc: Any, *, cookie: bool = False, env: dict[str, str] | None = None) -> Settings:
    data = base_config()
    login: dict[str, Any] = {"oidc": oidc}
    if cookie:
        login["cookie"] = data["login"]["cookie"]
    data["login"] = login
    return load_settings(None, {**TEST_ENV, **OIDC_ENV} if env is None else env, overrides=data)


def test_one_provider_with_secure_defaults() -> None:
    [provider] = load(PROVIDER).oidc
    assert provider.name == "default"
    assert provider.scopes == ("openid", "email", "profile")
    assert provider.redirect_path == "/callback"
    assert provider.post_logout_redirect_path == "/"
    assert provider.token_endpoint_auth_method == "client_secret_basic"
    assert provider.client_secret.reveal() == OP_CLIENT_SECRET
    assert provider.claims_from_userinfo is False


def test_several_named_providers() -> None:
    settings = load(
        {
            "corp": {**PROVIDER, "title": "Staff"},
            "partner": {
                "issuer": "https://login.partner.example",
                "client_id": "shop",
                "client_secret_env": "PARTNER_SECRET",
                "claims_from_userinfo": ["groups"],
            },
        },
        env={**TEST_ENV, **OIDC_ENV, "PARTNER_SECRET": "partner-secret-value"},
    )
    assert [p.name for p in settings.oidc] == ["corp", "partner"]
    assert settings.oidc[1].claims_from_userinfo == ("groups",)


def test_sso_and_site_cookie_together() -> None:
    settings = load(PROVIDER, cookie=True)
    assert settings.site_cookie is not None and settings.oidc


def test_client_secret_never_shows() -> None:
    shown = repr(config_report.masked(load(PROVIDER)))
    assert OP_CLIENT_SECRET not in shown and "********" in shown


@pytest.mark.parametrize(
    ("oidc", "message"),
    [
        ({**PROVIDER, "issuer": "http://id.example.com"}, "login.oidc.issuer: must be https"),
        ({**PROVIDER, "issuer": "id.example.com"}, "login.oidc.issuer"),
        ({**PROVIDER, "issuer": "https://u:p@id.example.com"}, "login.oidc.issuer"),
        ({**PROVIDER, "client_id": ""}, "login.oidc.client_id"),
        ({**PROVIDER, "client_secret_env": "NOPE"}, "NOPE: not set"),
        ({**PROVIDER, "scopes": ["email"]}, "must include 'openid'"),
        ({**PROVIDER, "token_endpoint_auth_method": "none"}, "token_endpoint_auth_method"),
        ({**PROVIDER, "redirect_path": "//evil.com/cb"}, "login.oidc.redirect_path"),
        ({**PROVIDER, "redirect_path": "https://evil.com/cb"}, "login.oidc.redirect_path"),
        ({**PROVIDER, "redirect_path": "/logout"}, "is a bridge route"),
        ({**PROVIDER, "post_logout_redirect_path": "/\\evil.com"}, "post_logout_redirect_path"),
        ({**PROVIDER, "claims_from_userinfo": "yes"}, "claims_from_userinfo"),
        ({**PROVIDER, "leeway": 3600}, "login.oidc.leeway"),
        ({**PROVIDER, "clientid": "typo"}, "login.oidc.clientid: unknown setting"),
        ({"corp": "not-a-table"}, "login.oidc.corp"),
        ({"bad name": PROVIDER}, "letters, digits"),
        ({}, "login.oidc: must be a table"),
    ],
)
def test_unsafe_or_wrong_settings_stop_start_up(oidc: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("\\", "\\\\")):
        load(oidc)
