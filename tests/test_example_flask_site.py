"""The example Flask shop, and the bridge accepting the login cookie it sets."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bridge.access.rules import is_allowed
from bridge.identity import Identity
from bridge.identity.site_cookie import SiteCookieSource
from bridge.secret import Secret
from bridge.settings.loader import load_settings
from bridge.settings.schema import FlaskCookie
from bridge.settings.values import AccessRules

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "flask_site"
KEY = "shop-key-" + "k" * 32
OLD_KEY = "shop-key-old-" + "o" * 32
NEW_KEY = "shop-key-new-" + "n" * 32
BRIDGE_ORIGIN = "http://127.0.0.1:8000"
PASSWORD = "demo-password"
SHOP_ENV = (
    "SITE_SECRET_KEY",
    "SHOP_TRUSTED_NEXT_ORIGINS",
    "SHOP_COOKIE_SECURE",
    "BRIDGE_PUBLIC_URL",
    "SENTIFYD_COMPONENT_SCRIPT",
    "AVATAR_ID",
)


@pytest.fixture(scope="session")
def shop() -> Iterator[ModuleType]:
    # The example lives beside the package, not in it: import it from the repository root.
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        yield importlib.import_module("examples.flask_site.shop")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SHOP_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def app(shop: ModuleType) -> Flask:
    return shop.create_app(secret_key=KEY, trusted_next_origins=[BRIDGE_ORIGIN])


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def csrf(client: FlaskClient) -> str:
    client.get("/login")
    with client.session_transaction() as sess:
        return str(sess["csrf_token"])


def login(client: FlaskClient, username: str = "alice", password: str = PASSWORD, **form: str):
    data = {"username": username, "password": password, "csrf_token": csrf(client), **form}
    return client.post("/login", data=data)


def session_cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("session")
    return cookie.value if cookie is not None else None


def bridge_source(*keys: str) -> SiteCookieSource:
    """Build the bridge's reader for the shop's cookie as bridge.toml does; keys newest first."""
    return SiteCookieSource(
        FlaskCookie(
            name="session",
            secret_key_env="SITE_SECRET_KEY",
            secret_keys=tuple(Secret(key) for key in keys),
            salt="cookie-session",
            max_age=2678400,
            user_field="user_id",
            login_url=f"http://127.0.0.1:5000/login?next={BRIDGE_ORIGIN}{{next}}",
            claim_fields=("email", "groups", "email_verified"),
            logout_url="http://127.0.0.1:5000/",
        )
    )


def bridge_identity(source: SiteCookieSource, cookie: str | None) -> Identity | None:
    return source.identity_from_payload(source.read(cookie))


# --- start-up ------------------------------------------------------------------------------


def test_refuses_to_start_without_a_secret_key(shop: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="SITE_SECRET_KEY"):
        shop.create_app()


def test_refuses_a_short_secret_key(shop: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="at least 32"):
        shop.create_app(secret_key="too-short")


def test_reads_keys_newest_first_from_the_environment(
    shop: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SITE_SECRET_KEY", f"{NEW_KEY}, {OLD_KEY}")
    app = shop.create_app()
    assert app.config["SECRET_KEY"] == NEW_KEY
    assert app.config["SECRET_KEY_FALLBACKS"] == [OLD_KEY]


def test_refuses_a_trusted_next_origin_with_a_path(
    shop: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TRUSTED_NEXT_ORIGINS", "http://127.0.0.1:8000/avatars")
    with pytest.raises(RuntimeError, match="SHOP_TRUSTED_NEXT_ORIGINS"):
        shop.create_app(secret_key=KEY)


def test_flask_cli_loads_the_app_from_the_repository_root() -> None:
    flask = Path(sys.executable).with_name("flask")
    env = {**os.environ, "SITE_SECRET_KEY": KEY}
    result = subprocess.run(
        [str(flask), "--app", "examples.flask_site.shop:create_app", "routes"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for rule in ("/login", "/logout", "/support"):
        assert rule in result.stdout


# --- login ---------------------------------------------------------------------------------


def test_login_with_the_right_password_signs_in(client: FlaskClient) -> None:
    response = login(client)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    with client.session_transaction() as sess:
        assert sess["user_id"] == "alice"
        assert sess["email"] == "alice@example.com"
        assert sess["groups"] == ["customers"]
        assert sess["email_verified"] is True
        assert sess.permanent
    assert "Signed in as <strong>alice</strong>" in client.get("/").get_data(as_text=True)


def test_login_with_a_wrong_password_is_refused(client: FlaskClient) -> None:
    response = login(client, password="not-the-password")
    assert response.status_code == 401
    assert "do not match an account" in response.get_data(as_text=True)
    with client.session_transaction() as sess:
        assert "user_id" not in sess


def test_login_of_an_unknown_user_is_refused(client: FlaskClient) -> None:
    response = login(client, username="mallory")
    assert response.status_code == 401
    with client.session_transaction() as sess:
        assert "user_id" not in sess


def test_session_cookie_is_httponly_lax_and_lasts_31_days(client: FlaskClient) -> None:
    response = login(client)
    set_cookie = response.headers["Set-Cookie"]
    assert set_cookie.startswith("session=")
    assert "HttpOnly" in set_cookie
    assert "SameSite=Lax" in set_cookie
    assert "Secure" not in set_cookie  # plain http on localhost unless SHOP_COOKIE_SECURE is set
    assert "Expires=" in set_cookie


def test_cookie_is_secure_when_configured(
    shop: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_COOKIE_SECURE", "true")
    response = login(shop.create_app(secret_key=KEY).test_client())
    assert "Secure" in response.headers["Set-Cookie"]


@pytest.mark.parametrize("target", ["/support", "/?sort=price", f"{BRIDGE_ORIGIN}/avatars/default"])
def test_login_returns_to_a_safe_next(client: FlaskClient, target: str) -> None:
    response = login(client, next=target)
    assert response.headers["Location"] == target


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "https://evil.com",
        "/\\evil.com",
        "/%5Cevil.com",
        "/%2F/evil.com",
        "/\t/evil.com",
        "http://127.0.0.1:8000@evil.com/",
        "https://127.0.0.1:8000/",  # another scheme is another origin
        "javascript:alert(1)",
        "evil.com",
    ],
)
def test_login_refuses_an_unsafe_next(client: FlaskClient, target: str) -> None:
    response = login(client, next=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


def test_login_refuses_the_bridge_as_next_unless_trusted(shop: ModuleType) -> None:
    client = shop.create_app(secret_key=KEY, trusted_next_origins=[]).test_client()
    response = login(client, next=f"{BRIDGE_ORIGIN}/")
    assert response.headers["Location"] == "/"


def test_login_form_carries_next_through(client: FlaskClient) -> None:
    page = client.get("/login?next=/support").get_data(as_text=True)
    assert 'name="next" value="/support"' in page


# --- CSRF ----------------------------------------------------------------------------------


def test_login_without_the_form_token_is_refused(client: FlaskClient) -> None:
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    with client.session_transaction() as sess:
        assert "user_id" not in sess


def test_login_with_another_browsers_form_token_is_refused(client: FlaskClient, app: Flask) -> None:
    token = csrf(app.test_client())
    csrf(client)
    data = {"username": "alice", "password": PASSWORD, "csrf_token": token}
    assert client.post("/login", data=data).status_code == 400


def test_login_post_with_no_session_at_all_is_refused(client: FlaskClient) -> None:
    data = {"username": "alice", "password": PASSWORD, "csrf_token": "anything"}
    assert client.post("/login", data=data).status_code == 400


def test_logout_without_the_form_token_is_refused(client: FlaskClient) -> None:
    login(client)
    assert client.post("/logout").status_code == 400
    with client.session_transaction() as sess:
        assert sess["user_id"] == "alice"


def test_logout_is_post_only(client: FlaskClient) -> None:
    login(client)
    assert client.get("/logout").status_code == 405


# --- logout and pages ----------------------------------------------------------------------


def test_logout_ends_the_session(client: FlaskClient) -> None:
    login(client)
    with client.session_transaction() as sess:
        token = sess["csrf_token"]
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert session_cookie(client) is None
    assert "Sign in" in client.get("/").get_data(as_text=True)


def test_front_page_lists_products(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert "Sencha green tea" in page
    assert "Gooseneck kettle" in page


def test_support_page_asks_for_login_first(client: FlaskClient) -> None:
    response = client.get("/support")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/support"


def test_support_page_embeds_the_avatar(client: FlaskClient) -> None:
    login(client)
    page = client.get("/support").get_data(as_text=True)
    assert (
        '<sentifyd-bot token-endpoint="http://127.0.0.1:8000/request_tokens" '
        'avatar-id="avtr_1234abcd">' in page
    )
    assert '<script type="module" src="https://frontend.sentifyd.io/sentifyd-bot/main.js">' in page


def test_support_page_follows_the_environment(
    shop: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", "https://shop.example/avatar/")
    monkeypatch.setenv("SENTIFYD_COMPONENT_SCRIPT", "https://cdn.example/bot.js")
    monkeypatch.setenv("AVATAR_ID", "avtr_other")
    client = shop.create_app(secret_key=KEY).test_client()
    login(client)
    page = client.get("/support").get_data(as_text=True)
    assert 'token-endpoint="https://shop.example/avatar/request_tokens"' in page
    assert 'avatar-id="avtr_other"' in page
    assert 'src="https://cdn.example/bot.js"' in page


# --- the bridge reads the shop's cookie -----------------------------------------------------


def test_bridge_accepts_the_cookie_the_shop_sets_at_login(client: FlaskClient) -> None:
    login(client)
    identity = bridge_identity(bridge_source(KEY), session_cookie(client))
    assert identity is not None
    assert identity.subject == "alice"
    assert identity.method == "site_cookie"
    assert dict(identity.claims) == {
        "email": "alice@example.com",
        "groups": ["customers"],
        "email_verified": True,
    }


def test_bridge_lets_customers_in_and_others_not(app: Flask) -> None:
    allow = AccessRules(groups=("customers",))  # the rule in bridge.toml
    seen = {}
    for name in ("alice", "bob"):
        client = app.test_client()
        login(client, username=name)
        identity = bridge_identity(bridge_source(KEY), session_cookie(client))
        assert identity is not None
        seen[name] = is_allowed(allow, identity)
    assert seen == {"alice": True, "bob": False}


def test_bridge_sees_no_login_before_the_visitor_signs_in(client: FlaskClient) -> None:
    client.get("/login")  # sets a session cookie holding only the form token
    cookie = session_cookie(client)
    assert cookie is not None
    assert bridge_identity(bridge_source(KEY), cookie) is None


def test_bridge_sees_no_login_after_logout(client: FlaskClient) -> None:
    login(client)
    with client.session_transaction() as sess:
        token = sess["csrf_token"]
    client.post("/logout", data={"csrf_token": token})
    assert bridge_identity(bridge_source(KEY), session_cookie(client)) is None


def test_bridge_refuses_a_cookie_signed_with_another_key(client: FlaskClient) -> None:
    login(client)
    assert bridge_identity(bridge_source(NEW_KEY), session_cookie(client)) is None


def test_bridge_follows_a_key_rotation(shop: ModuleType) -> None:
    before = shop.create_app(secret_key=OLD_KEY).test_client()
    login(before)
    old_cookie = session_cookie(before)

    # The shop rotates: the new key signs, the old one is still accepted (SECRET_KEY_FALLBACKS).
    rotated = shop.create_app(secret_key=f"{NEW_KEY},{OLD_KEY}").test_client()
    rotated.set_cookie("session", old_cookie)
    assert "Signed in as <strong>alice</strong>" in rotated.get("/").get_data(as_text=True)
    resigned = session_cookie(rotated)
    assert resigned != old_cookie

    assert bridge_identity(bridge_source(NEW_KEY, OLD_KEY), old_cookie).subject == "alice"
    assert bridge_identity(bridge_source(NEW_KEY), old_cookie) is None
    assert bridge_identity(bridge_source(NEW_KEY), resigned).subject == "alice"


def test_bridge_login_url_brings_the_visitor_back_to_the_bridge(client: FlaskClient) -> None:
    url = urlsplit(bridge_source(KEY).login_url("/avatars/default"))
    assert (url.scheme, url.netloc, url.path) == ("http", "127.0.0.1:5000", "/login")
    page = client.get(f"{url.path}?{url.query}").get_data(as_text=True)
    assert f'name="next" value="{BRIDGE_ORIGIN}/avatars/default"' in page
    response = login(client, next=f"{BRIDGE_ORIGIN}/avatars/default")
    assert response.headers["Location"] == f"{BRIDGE_ORIGIN}/avatars/default"


def test_bridge_toml_matches_the_shop(app: Flask, client: FlaskClient) -> None:
    env = {
        "BRIDGE_SECRET_KEY": "b" * 40,
        "AVATAR_API_KEY": "test-avatar-key",
        "SITE_SECRET_KEY": KEY,
    }
    settings = load_settings(EXAMPLE / "bridge.toml", env=env)
    cookie = settings.site_cookie
    assert cookie is not None
    assert cookie.name == app.config["SESSION_COOKIE_NAME"]
    assert cookie.salt == app.session_interface.salt
    assert cookie.max_age == app.permanent_session_lifetime.total_seconds()
    assert settings.server.public_origin in app.config["TRUSTED_NEXT_ORIGINS"]
    assert settings.avatars[0].allow == AccessRules(groups=("customers",))

    login(client)
    identity = bridge_identity(SiteCookieSource(cookie), session_cookie(client))
    assert identity is not None
    assert identity.subject == "alice"
