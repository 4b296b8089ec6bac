"""The Django example as its README runs it: Django's own login and signed_cookies sessions,
and the bridge beside it verifying the same sessionid cookie."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from support.config import API_KEY
from support.live import LiveServer, free_port
from support.redis import BridgeProcess, start_site_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "django_site"
SITE_COMMAND = "python -m examples.django_site"
BRIDGE_COMMAND = "sentifyd-bridge serve --config examples/django_site/bridge.toml"
KEY = "django-shop-secret-key-0123456789abcdef"
OLD_KEY = "django-shop-older-key-9876543210fedcba"


@dataclass
class Shop:
    site: str
    bridge: str


def test_readme_gives_the_two_commands() -> None:
    readme = (EXAMPLE / "README.md").read_text()
    assert SITE_COMMAND in readme and BRIDGE_COMMAND in readme


def start_shop(port: int, keys: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHOP_PORT": str(port), "SITE_SECRET_KEY": keys,
           "SHOP_TRUSTED_NEXT_ORIGINS": ""}  # fmt: skip
    argv = [sys.executable, *SITE_COMMAND.split()[1:]]
    return start_site_process(
        argv, port=port, log=log, what="the Django shop", timeout=30, cwd=ROOT, env=env
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp("django")
    fake = LiveServer(create_fake_sentifyd({API_KEY: "avtr_1234abcd"}, token_ttl=60)).start()
    site_port = free_port()
    site = start_shop(site_port, f"{KEY},{OLD_KEY}", tmp / "site.log")
    bridge = BridgeProcess(tmp, "bridge", config_path=tmp / "bridge.toml",
                           env={"SITE_SECRET_KEY": f"{KEY},{OLD_KEY}"})  # fmt: skip
    text = (EXAMPLE / "bridge.toml").read_text()
    for old, new in (("5000", site_port), ("8000", bridge.port), ("8100", fake.port)):
        assert f"127.0.0.1:{old}" in text
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    bridge.config_path.write_text(text)
    try:
        bridge.start()
        yield Shop(f"http://127.0.0.1:{site_port}", bridge.url)
    finally:
        bridge.stop()
        stop(site)
        fake.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def sign_in(client: httpx.Client, site: str, user: str = "alice") -> None:
    form = client.get(f"{site}/login").text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token is not None
    data: dict[str, Any] = {"csrfmiddlewaretoken": token[1], "username": user,
                            "password": "demo-password", "next": "/"}  # fmt: skip
    response = client.post(f"{site}/login", data=data)
    assert response.status_code == 302, response.text
    assert client.cookies.get("sessionid", domain="127.0.0.1")


def sign_out(client: httpx.Client, site: str) -> None:
    form = client.get(f"{site}/").text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token is not None
    assert client.post(f"{site}/logout", data={"csrfmiddlewaretoken": token[1]}).status_code == 302


def test_signed_in_customer_gets_tokens_and_logout_ends_them(
    shop: Shop, client: httpx.Client
) -> None:
    assert client.get(f"{shop.bridge}/request_tokens").status_code == 401
    sign_in(client, shop.site)
    answer = client.get(f"{shop.bridge}/request_tokens")
    assert answer.status_code == 200, answer.text
    assert "accessToken" in answer.json()["tokens"]
    sign_out(client, shop.site)
    after = client.get(f"{shop.bridge}/request_tokens")
    assert after.status_code == 401 and after.json()["error"] == "login_required"


def test_signed_in_non_customer_is_refused(shop: Shop, client: httpx.Client) -> None:
    sign_in(client, shop.site, "bob")
    assert client.get(f"{shop.bridge}/request_tokens").status_code == 403


def test_tampered_cookie_is_not_a_login(shop: Shop, client: httpx.Client) -> None:
    sign_in(client, shop.site)
    good = client.cookies.get("sessionid", domain="127.0.0.1")
    assert good is not None
    payload, stamp, signature = good.rsplit(":", 2)
    forged = payload.replace(payload[3], "A" if payload[3] != "A" else "B", 1)
    with httpx.Client(timeout=10, cookies={"sessionid": f"{forged}:{stamp}:{signature}"}) as other:
        assert other.get(f"{shop.bridge}/request_tokens").status_code == 401


def test_cookie_signed_with_the_older_key_is_still_accepted(
    shop: Shop, client: httpx.Client, tmp_path: Path
) -> None:
    # The same shop before the rotation: OLD_KEY was its only key.
    port = free_port()
    before = start_shop(port, OLD_KEY, tmp_path / "before.log")
    try:
        sign_in(client, f"http://127.0.0.1:{port}")
    finally:
        stop(before)
    answer = client.get(f"{shop.bridge}/request_tokens")  # the bridge holds "KEY,OLD_KEY"
    assert answer.status_code == 200, answer.text
