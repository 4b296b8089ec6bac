"""Several providers at once ([login.oidc.<name>], GET /login?provider=<name>)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from quart import Quart

from bridge.app import create_app
from support.app import Clock
from support.config import PUBLIC_URL
from support.oidc import ControlledProvider, callback, oidc_settings, query_of, records, session_of


@pytest.fixture
def corp(clock: Clock) -> ControlledProvider:
    return ControlledProvider(issuer="https://corp.example.test", clock=clock)


@pytest.fixture
def partner(clock: Clock) -> ControlledProvider:
    return ControlledProvider(issuer="https://partner.example.test", clock=clock)


@pytest.fixture
async def app(
    corp: ControlledProvider, partner: ControlledProvider, clock: Clock, fake: Quart
) -> AsyncIterator[Quart]:
    providers = {"corp.example.test": corp, "partner.example.test": partner}
    settings = oidc_settings(
        PUBLIC_URL,
        {
            name: {"issuer": op.issuer, "client_id": op.client_id, "title": name.title()}
            for name, op in (("corp", corp), ("partner", partner))
        },
    )
    application = create_app(
        settings,
        oidc_transport=httpx.MockTransport(lambda r: providers[r.url.host].handler(r)),
        sentifyd_transport=httpx.ASGITransport(app=fake),
        clock=clock,
    )
    async with application.test_app():
        yield application


async def login_with(app: Quart, op: ControlledProvider, name: str, sub: str = "alice-sub") -> Any:
    client = app.test_client()
    response = await client.get("/login", query_string={"provider": name, "next": "/"})
    assert response.headers["Location"].startswith(op.issuer + "/authorize?")
    params = query_of(response.headers["Location"])
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"], sub=sub)))
    assert (await callback(client, op, params)).status_code == 303
    return client


async def test_login_without_provider_offers_a_choice(app: Quart) -> None:
    response = await app.test_client().get("/login", query_string={"next": "/avatars/premium"})
    page = (await response.get_data()).decode()
    assert response.status_code == 200 and "text/html" in response.headers["Content-Type"]
    assert "/login?provider=corp&amp;next=%2Favatars%2Fpremium" in page
    assert "/login?provider=partner&amp;next=%2Favatars%2Fpremium" in page


async def test_unknown_provider_is_404(app: Quart) -> None:
    response = await app.test_client().get("/login", query_string={"provider": "nope"})
    assert response.status_code == 404
    assert (await response.get_json())["error"] == "unknown_provider"


async def test_same_sub_at_two_providers_is_two_users(
    app: Quart, corp: ControlledProvider, partner: ControlledProvider
) -> None:
    at_corp = await login_with(app, corp, "corp")
    at_partner = await login_with(app, partner, "partner")
    assert (await session_of(at_corp))["user"]["subject"] == "corp:alice-sub"
    assert (await session_of(at_partner))["user"]["subject"] == "partner:alice-sub"


async def test_a_provider_logs_out_only_its_own_sessions(
    app: Quart, corp: ControlledProvider, partner: ControlledProvider
) -> None:
    at_corp = await login_with(app, corp, "corp")
    at_partner = await login_with(app, partner, "partner")
    token = corp.sign(corp.logout_claims(sid=None))
    response = await app.test_client().post("/backchannel-logout", form={"logout_token": token})
    assert response.status_code == 200
    assert (await session_of(at_corp))["signed_in"] is False
    assert (await session_of(at_partner))["signed_in"] is True


async def test_mix_up_callback_naming_the_other_provider_is_refused(
    app: Quart, corp: ControlledProvider, partner: ControlledProvider
) -> None:
    client = app.test_client()
    response = await client.get("/login", query_string={"provider": "corp"})
    params = query_of(response.headers["Location"])
    corp.token_response = corp.tokens(corp.sign(corp.claims(params["nonce"])))
    response = await callback(client, corp, params, iss=partner.issuer)
    assert response.status_code == 400 and records(app) == []


async def test_partner_token_is_no_good_for_a_corp_login(
    app: Quart, corp: ControlledProvider, partner: ControlledProvider
) -> None:
    client = app.test_client()
    response = await client.get("/login", query_string={"provider": "corp"})
    params = query_of(response.headers["Location"])
    corp.token_response = corp.tokens(partner.sign(partner.claims(params["nonce"])))
    assert (await callback(client, corp, params)).status_code == 400


async def test_login_choice_page_cannot_be_framed(app: Quart) -> None:
    response = await app.test_client().get("/login")
    assert response.headers.getlist("Content-Security-Policy") == [
        response.headers["Content-Security-Policy"]
    ]
    assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]
