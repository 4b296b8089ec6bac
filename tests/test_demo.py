"""The embedded demo: its stand-in site login, the bridge and the stand-in Sentifyd together."""

from __future__ import annotations

import re

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge.doubles.demo import create_demo_app


@pytest.fixture
async def demo() -> Quart:
    app = create_demo_app(port=8000)
    async with app.test_app():
        yield app  # type: ignore[misc]


async def sign_in(client: Client, user: str) -> None:
    form = (await (await client.get("/demo/login?next=/")).get_data()).decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    response = await client.post(
        "/demo/login", form={"username": user, "next": "/", "csrf": csrf.group(1)}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/"


async def test_first_look_redirects_to_the_demo_login(demo: Quart) -> None:
    response = await demo.test_client().get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/demo/login?next=/"


async def test_customer_signs_in_and_gets_tokens(demo: Quart) -> None:
    client = demo.test_client()
    await sign_in(client, "alice")
    page = await client.get("/")
    assert page.status_code == 200
    assert "/static/demo/sentifyd-bot.js" in (await page.get_data()).decode()
    tokens = await client.get("/request_tokens")
    assert tokens.status_code == 200
    body = await tokens.get_json()
    state = demo.extensions["fake_sentifyd"]
    assert body["tokens"]["accessToken"] in state.issued_access_tokens
    assert body["tokens"]["refreshToken"] not in state.issued_refresh_tokens


async def test_non_customer_is_refused(demo: Quart) -> None:
    client = demo.test_client()
    await sign_in(client, "bob")
    assert (await client.get("/")).status_code == 403
    assert (await client.get("/request_tokens")).status_code == 403


async def test_signing_out_of_the_site_stops_the_avatar(demo: Quart) -> None:
    client = demo.test_client()
    await sign_in(client, "alice")
    handle = (await (await client.get("/request_tokens")).get_json())["tokens"]["refreshToken"]
    await client.post("/demo/logout")
    refused = await client.get("/request_tokens", query_string={"refreshToken": handle})
    assert refused.status_code == 401
    assert (await refused.get_json())["login_url"] == "/demo/login?next=/"


async def test_login_without_the_form_token_is_refused(demo: Quart) -> None:
    client = demo.test_client()
    response = await client.post("/demo/login", form={"username": "alice", "next": "/"})
    assert response.status_code == 400


async def test_login_never_redirects_off_site(demo: Quart) -> None:
    client = demo.test_client()
    form = (await (await client.get("/demo/login")).get_data()).decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    response = await client.post(
        "/demo/login", form={"username": "alice", "next": "//evil.com", "csrf": csrf.group(1)}
    )
    assert response.headers["Location"] == "/"
