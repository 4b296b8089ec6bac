"""Single sign-on against a real OpenID provider (node-oidc-provider on 127.0.0.1): login with
PKCE and nonce, tokens for the signed-in user, refresh, RP-initiated logout and back-channel
logout, driven over HTTP with cookie jars like browsers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from quart import Quart

from bridge.wiring import Bridge
from support.app import Clock
from support.live import LiveServer, free_port
from support.oidc import RealProvider, oidc_settings, query_of

pytestmark = pytest.mark.integration


def oidc_records(app: Quart) -> list[dict[str, Any]]:
    snapshot = Bridge.of(app).store.snapshot()  # type: ignore[attr-defined]
    values = [json.loads(v) for v in snapshot.values() if isinstance(v, bytes) and v[:1] == b"{"]
    return [v for v in values if v.get("method") == "oidc"]


@pytest.fixture
def clock() -> Clock:
    # The provider signs with the real time; the bridge's clock starts there and moves by hand.
    return Clock(time.time())


@pytest.fixture
def bridge_server(
    real_op: RealProvider,
    live_fake: LiveServer,
    clock: Clock,
) -> Iterator[Callable[..., tuple[LiveServer, Quart]]]:
    from bridge.app import create_app

    servers: list[LiveServer] = []

    def start(**oidc: Any) -> tuple[LiveServer, Quart]:
        app = create_app(real_op.bridge_settings(live_fake.url, oidc), clock=clock)
        server = LiveServer(app, port=real_op.bridge_port).start()
        servers.append(server)
        return server, app

    yield start
    for server in servers:
        server.stop()


def test_login_asks_for_code_with_pkce_state_and_nonce(
    bridge_server: Any,
    browsers: Any,
    real_op: RealProvider,
) -> None:
    bridge_server()
    browser = browsers()
    start = browser.http.get(f"{real_op.bridge_url}/login", params={"next": "/avatars/premium"})
    assert start.status_code == 302
    params = query_of(start.headers["location"])
    assert start.headers["location"].startswith(real_op.issuer + "/auth?")
    assert params["response_type"] == "code"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 43 and len(params["nonce"]) >= 43
    assert params["redirect_uri"] == f"{real_op.bridge_url}/callback"
    assert (
        "HttpOnly" in start.headers["set-cookie"] and "SameSite=Lax" in start.headers["set-cookie"]
    )


def test_full_flow_login_tokens_and_rp_initiated_logout(
    bridge_server: Any,
    browsers: Any,
    real_op: RealProvider,
) -> None:
    bridge_server()
    alice = browsers()
    back = alice.login("alice", "/avatars/premium")
    assert back.status_code == 303
    assert back.headers["location"] == "/avatars/premium"
    session = alice.session()
    assert session["signed_in"] is True and session["method"] == "oidc"
    assert session["user"] == {"subject": "alice", "name": "Alice", "email": "alice@example.com"}
    assert {a["name"] for a in session["avatars"]} == {"default", "premium"}

    tokens = alice.http.get(f"{real_op.bridge_url}/request_tokens/premium")
    assert tokens.status_code == 200, tokens.text
    assert set(tokens.json()["tokens"]) >= {"accessToken", "refreshToken"}

    page = alice.http.get(f"{real_op.bridge_url}/avatars/premium")
    assert page.status_code == 200
    assert 'action="/logout"' in page.text and session["logout"]["csrf_token"] in page.text

    logout = alice.http.post(
        f"{real_op.bridge_url}/logout",
        data={"csrf_token": session["logout"]["csrf_token"]},
        headers={"Origin": real_op.bridge_url},
    )
    assert logout.status_code == 303
    end_session = logout.headers["location"]
    assert end_session.startswith(real_op.issuer + "/session/end?")
    params = query_of(end_session)
    assert params["post_logout_redirect_uri"] == f"{real_op.bridge_url}/"
    assert params["id_token_hint"].count(".") == 2 and params["client_id"] == "bridge"

    # The bridge session is over before the provider is even asked.
    assert alice.session()["signed_in"] is False
    assert alice.http.get(f"{real_op.bridge_url}/request_tokens/premium").status_code == 401

    done = alice.confirm_provider_logout(alice.http.get(end_session))
    assert urljoin(str(done.url), done.headers["location"]) == f"{real_op.bridge_url}/"
    # Signed out at the provider too: a new login asks for credentials again.
    again = alice.follow(alice.http.get(f"{real_op.bridge_url}/login"))
    assert 'name="login"' in again.text


def test_access_rules_apply_to_provider_claims(
    bridge_server: Any,
    browsers: Any,
    real_op: RealProvider,
) -> None:
    bridge_server()
    bob = browsers()
    bob.login("bob")
    assert [a["name"] for a in bob.session()["avatars"]] == ["default"]
    refused = bob.http.get(f"{real_op.bridge_url}/request_tokens/premium")
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert bob.http.get(f"{real_op.bridge_url}/request_tokens").status_code == 200
    page = bob.http.get(f"{real_op.bridge_url}/avatars/premium")
    assert page.status_code == 403 and "text/html" in page.headers["content-type"]


def test_backchannel_logout_from_provider_ends_exactly_that_session(
    bridge_server: Any,
    browsers: Any,
    real_op: RealProvider,
) -> None:
    _, app = bridge_server()
    alice_laptop, alice_phone, bob = browsers(), browsers(), browsers()
    for browser, user in ((alice_laptop, "alice"), (alice_phone, "alice"), (bob, "bob")):
        assert browser.login(user).status_code == 303
        assert browser.session()["signed_in"] is True

    # Alice signs out at the provider itself (not through the bridge) on her laptop.
    ended: list[dict[str, Any]] = []
    Bridge.of(app).lifecycle.listeners.append(
        lambda e: ended.append(e) if e["event"] == "session_ended" else None
    )
    alice_laptop.confirm_provider_logout(alice_laptop.http.get(f"{real_op.issuer}/session/end"))

    assert [(e["user"], e["reason"]) for e in ended] == [("alice", "backchannel_logout")]
    assert alice_laptop.session()["signed_in"] is False
    assert alice_phone.session()["signed_in"] is True
    assert bob.session()["signed_in"] is True


def test_provider_tokens_are_renewed_when_they_expire(
    bridge_server: Any,
    browsers: Any,
    real_op: RealProvider,
    clock: Clock,
) -> None:
    _, app = bridge_server()
    alice = browsers()
    alice.login("alice")
    [record] = oidc_records(app)
    clock.advance(290)  # within 30 s of the provider's 5-minute access token
    assert alice.http.get(f"{real_op.bridge_url}/request_tokens").status_code == 200
    [renewed] = oidc_records(app)
    assert renewed["id"] == record["id"]
    assert renewed["extra"]["oidc"]["expires_at"] > record["extra"]["oidc"]["expires_at"] + 200
    assert renewed["extra"]["oidc"]["tokens"] != record["extra"]["oidc"]["tokens"]
    assert alice.session()["signed_in"] is True


def test_client_secret_post_works_too(
    bridge_server: Any,
    browsers: Any,
    real_op: RealProvider,
) -> None:
    bridge_server(client_id="bridge-post", token_endpoint_auth_method="client_secret_post")
    alice = browsers()
    assert alice.login("alice").status_code == 303
    assert alice.session()["signed_in"] is True


def test_provider_tokens_are_never_stored_in_plain(
    bridge_server: Any,
    browsers: Any,
    real_op: RealProvider,
) -> None:
    _, app = bridge_server()
    alice = browsers()
    alice.login("alice")
    [record] = oidc_records(app)
    assert record["extra"]["oidc"]["refreshable"] is True
    dump = repr(Bridge.of(app).store.snapshot())  # type: ignore[attr-defined]
    assert "eyJ" not in dump  # no JWT (the ID token) anywhere in the store


def test_login_with_unreachable_provider_is_503(
    browsers: Any, live_fake: LiveServer, clock: Clock
) -> None:
    from bridge.app import create_app

    port = free_port()
    settings = oidc_settings(
        f"http://127.0.0.1:{port}",
        {
            "issuer": f"http://127.0.0.1:{free_port()}",
            "client_id": "bridge",
            "client_secret_env": "OIDC_CLIENT_SECRET",
        },
    )
    server = LiveServer(create_app(settings, clock=clock), port=port).start()
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/login")
        assert response.status_code == 503
        assert response.json()["error"] == "identity_provider_unavailable"
    finally:
        server.stop()
