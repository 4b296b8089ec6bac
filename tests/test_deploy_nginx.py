"""The worked deployment (examples/deploy/) under a real nginx: the example shop at /, the bridge
at /avatar/, one origin. The test runs the example's own nginx.conf and site.conf, with only the
three port numbers changed, and the example's bridge.toml, with only ports and the backend
changed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart, jsonify, request
from werkzeug.serving import BaseWSGIServer, make_server

from bridge.app import create_app
from bridge.settings.loader import load_settings
from support.config import API_KEY, BRIDGE_KEY, SITE_KEY
from support.deploy import nginx_binary, raw_request
from support.live import LiveServer, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples" / "deploy"
PASSWORD = "demo-password"

pytestmark = pytest.mark.integration


def substitute(text: str, old: str, new: str) -> str:
    """Replace ``old`` exactly once, so the test breaks if the example drifts."""
    assert text.count(old) == 1, f"expected {old!r} once in the example"
    return text.replace(old, new)


@dataclass
class Deployment:
    port: int
    shop: BaseWSGIServer
    bridge: LiveServer
    bridge_app: Quart
    nginx: subprocess.Popen[bytes]
    logs: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_shop(port: int, monkeypatch: pytest.MonkeyPatch) -> BaseWSGIServer:
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.flask_site.shop import create_app as create_shop

    # The shop's one bridge-aware page points at the bridge on the same origin.
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", "/avatar")
    server = make_server("127.0.0.1", port, create_shop(SITE_KEY), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def with_whoami(application: Quart) -> Quart:
    """Add a route that reports what the bridge sees of a request (this test only)."""

    async def whoami() -> Any:
        return jsonify(
            {
                "remote_addr": request.remote_addr,
                "trusted_proxy": request.scope.get("bridge.trusted_proxy"),
                "x_forwarded_for": request.headers.get("X-Forwarded-For"),
                "x_forwarded_prefix": request.headers.get("X-Forwarded-Prefix"),
                "x_remote_user": request.headers.get("X-Remote-User"),
                "host": request.host,
            }
        )

    application.add_url_rule("/_whoami", "whoami", whoami)
    return application


def start_nginx(
    binary: str, tmp: Path, port: int, shop: int, bridge: int
) -> subprocess.Popen[bytes]:
    site = (DEPLOY / "site.conf").read_text()
    site = substitute(site, "listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
    site = substitute(site, "server 127.0.0.1:5000;", f"server 127.0.0.1:{shop};")
    site = substitute(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{bridge};")
    (tmp / "site.conf").write_text(site)
    shutil.copy(DEPLOY / "nginx.conf", tmp / "nginx.conf")
    command = [binary, "-p", f"{tmp}/", "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")]
    if os.geteuid() == 0:
        # As root, nginx's workers would run as "nobody", who cannot enter pytest's tmp dir.
        command += ["-g", "user root;"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):  # bounded polling of a real external process
        if process.poll() is not None:
            errors = process.stderr.read().decode() if process.stderr else ""
            log = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
            pytest.fail(f"nginx exited with {process.returncode}: {errors}{log}")
        try:
            with httpx.Client() as probe:
                probe.get(f"http://127.0.0.1:{port}/avatar/healthz", timeout=0.5)
            return process
        except httpx.TransportError:
            threading.Event().wait(0.05)
    process.kill()
    pytest.fail("nginx did not start listening")


@pytest.fixture
def deployment(
    live_fake: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    binary = nginx_binary()
    port, shop_port, bridge_port = free_port(), free_port(), free_port()
    shop = start_shop(shop_port, monkeypatch)
    env = {"BRIDGE_SECRET_KEY": BRIDGE_KEY, "AVATAR_API_KEY": API_KEY, "SITE_SECRET_KEY": SITE_KEY}
    settings = load_settings(
        DEPLOY / "bridge.toml",
        env,
        overrides={
            "server": {"port": bridge_port, "public_url": f"http://127.0.0.1:{port}"},
            "sentifyd": {"backend": live_fake.url},
        },
    )
    bridge_app = with_whoami(create_app(settings))
    bridge = LiveServer(bridge_app, bridge_port).start()
    nginx = start_nginx(binary, tmp_path, port, shop_port, bridge_port)
    try:
        yield Deployment(port, shop, bridge, bridge_app, nginx, tmp_path)
    finally:
        nginx.terminate()
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(5)
        if nginx.stderr:
            nginx.stderr.close()
        bridge.stop()
        shop.shutdown()
        shop.server_close()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the shop's form carries its token"
    return match.group(1)


def sign_in(browser: httpx.Client, user: str, next_path: str) -> httpx.Response:
    form = browser.get("/login", params={"next": next_path})
    assert form.status_code == 200 and "Kettle" in form.text  # the shop answered, via nginx
    return browser.post(
        "/login",
        data={
            "username": user,
            "password": PASSWORD,
            "csrf_token": csrf_token(form.text),
            "next": next_path,
        },
    )


def test_sign_in_on_the_shop_and_get_tokens_through_nginx(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url) as browser:
        # Signed out, the avatar page sends the visitor to the shop's own login.
        page = browser.get("/avatar/")
        assert page.status_code == 302
        assert page.headers["Location"] == "/login?next=/avatar/"

        signed_in = sign_in(browser, "alice", "/avatar/")
        assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/avatar/"

        page = browser.get("/avatar/")
        assert page.status_code == 200
        assert 'token-endpoint="/avatar/request_tokens"' in page.text
        assert 'href="/avatar/static/bridge.css"' in page.text
        css = browser.get("/avatar/static/bridge.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")

        issued = browser.get("/avatar/request_tokens")
        assert issued.status_code == 200
        body = issued.json()
        assert set(body["tokens"]) >= {"accessToken", "refreshToken"}
        cookies = issued.headers.get_list("set-cookie")
        assert len(cookies) == 1 and cookies[0].startswith("sentifyd_bridge=")
        assert "path=/avatar;" in cookies[0].lower() + ";" and "domain" not in cookies[0].lower()
        assert "session" in browser.cookies  # the shop's cookie, untouched by the bridge

        refreshed = browser.get(
            "/avatar/request_tokens", params={"refreshToken": body["tokens"]["refreshToken"]}
        )
        assert refreshed.status_code == 200
        assert refreshed.json()["tokens"]["refreshToken"] != body["tokens"]["refreshToken"]

        # The shop's own support page embeds the component against the same-origin endpoint.
        support = browser.get("/support")
        assert 'token-endpoint="/avatar/request_tokens"' in support.text

        # Signing out of the shop stops the avatar.
        signed_out = browser.post("/logout", data={"csrf_token": csrf_token(support.text)})
        assert signed_out.status_code == 303
        refused = browser.get("/avatar/request_tokens")
        assert refused.status_code == 401
        assert refused.json()["login_url"] == "/login?next=/avatar/"


def test_a_signed_in_non_customer_is_refused_through_nginx(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url) as browser:
        assert sign_in(browser, "bob", "/avatar/").status_code == 303
        assert browser.get("/avatar/request_tokens").status_code == 403


def test_nginx_replaces_what_the_client_claims(deployment: Deployment) -> None:
    spoofed = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Prefix": "/evil",
        "X-Remote-User": "admin",
        "X_Forwarded_For": "7.7.7.7",  # an underscore variant: nginx drops it
    }
    seen = raw_request(deployment.port, "/avatar/_whoami", spoofed).json()
    assert seen == {
        "remote_addr": "127.0.0.1",
        "trusted_proxy": True,
        "x_forwarded_for": "127.0.0.1",
        "x_forwarded_prefix": None,
        "x_remote_user": None,
        "host": "127.0.0.1",
    }


def test_direct_requests_still_cannot_leave_the_base_path(deployment: Deployment) -> None:
    # Straight to the bridge, around nginx: the routes outside /avatar do not exist.
    for path in ("/request_tokens", "/healthz", "/"):
        response = raw_request(deployment.bridge.port, path)
        assert response.status == 404 and response.json() == {
            "error": "not_found",
            "message": "There is nothing here.",
        }


@pytest.mark.parametrize(
    "path",
    [
        "/avatar/x%2F..%2Frequest_tokens",  # nginx routes on /avatar/request_tokens, passes raw
        "/avatar/request_tokens%2Fpremium",
        "/avatar//request_tokens",
        "/avatar/./request_tokens",
        "/avatar/%2e/request_tokens",
        "/avatar/static%5C..%5Crequest_tokens",
    ],
)
def test_paths_nginx_and_the_bridge_could_read_differently_are_refused(
    deployment: Deployment, path: str
) -> None:
    with httpx.Client(base_url=deployment.url) as browser:
        assert sign_in(browser, "alice", "/").status_code == 303
        cookie = f"session={browser.cookies['session']}"
    response = raw_request(deployment.port, path, {"Cookie": cookie})
    assert response.status == 400, (response.status, response.body[:200])
    assert response.json() == {"error": "bad_path", "message": "The path is not in canonical form."}
    assert not response.cookies


@pytest.mark.parametrize("path", ["/AVATAR/request_tokens", "/Avatar/", "/avatars/request_tokens"])
def test_another_case_of_the_prefix_is_the_shops_not_the_bridges(
    deployment: Deployment, path: str
) -> None:
    response = raw_request(deployment.port, path)
    assert response.status == 404
    assert b"accessToken" not in response.body and b"not_found" not in response.body


def test_the_prefix_without_its_slash_redirects_to_a_path(deployment: Deployment) -> None:
    response = raw_request(deployment.port, "/avatar", {"Host": "evil.example"})
    assert response.status in (301, 308)
    assert response.headers["Location"] == "/avatar/"


def test_missing_nginx_fails_in_ci_and_skips_only_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run"):
        nginx_binary()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        nginx_binary()
