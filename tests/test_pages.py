"""The avatar page: the component wired to this bridge, for signed-in, allowed visitors only."""

from __future__ import annotations

from typing import Any

from quart import Quart
from quart.typing import TestClientProtocol as Client

from support.app import login
from support.config import AVATAR_ID, make_settings


async def test_page_renders_the_component_with_both_spellings(client: Client, app: Quart) -> None:
    login(client, app)
    response = await client.get("/")
    assert response.status_code == 200
    html = (await response.get_data()).decode()
    assert 'token-endpoint="/request_tokens"' in html and 'token_endpoint="/request_tokens"' in html
    assert f'avatar-id="{AVATAR_ID}"' in html and f'avatar_id="{AVATAR_ID}"' in html
    assert '<script type="module" src="https://frontend.sentifyd.io/sentifyd-bot/main.js"' in html
    assert "<sentifyd-bot" in html


async def test_named_avatar_page_points_at_its_endpoint(client: Client, app: Quart) -> None:
    login(client, app, groups=["customers"])
    html = (await (await client.get("/avatars/premium")).get_data()).decode()
    assert 'token-endpoint="/request_tokens/premium"' in html


async def test_page_has_a_strict_policy(client: Client, app: Quart) -> None:
    login(client, app)
    response = await client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'self'" in csp
    assert "script-src 'self' https://frontend.sentifyd.io" in csp
    assert response.headers["Cache-Control"] == "no-store"


async def test_logged_out_visitor_is_sent_to_the_site_login(client: Client) -> None:
    response = await client.get("/avatars/premium")
    assert response.status_code == 302
    assert response.headers["Location"] == "https://shop.example.com/login?next=/avatars/premium"


async def test_not_allowed_visitor_gets_a_403_page(client: Client, app: Quart) -> None:
    login(client, app, "bob", groups=["staff"])
    response = await client.get("/avatars/premium")
    assert response.status_code == 403
    assert response.content_type.startswith("text/html")
    assert "<sentifyd-bot" not in (await response.get_data()).decode()


async def test_unknown_avatar_page_is_404(client: Client, app: Quart) -> None:
    login(client, app)
    assert (await client.get("/avatars/ghost")).status_code == 404


async def test_configured_attributes_are_escaped(make_app: Any) -> None:
    settings = make_settings({"component": {"attributes": {"brand-name": '"><script>x</script>'}}})
    application = make_app(settings)
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        html = (await (await client.get("/")).get_data()).decode()
    assert "<script>x</script>" not in html
    assert "brand-name=" in html


async def test_defer_script_type(make_app: Any) -> None:
    application = make_app(make_settings({"component": {"script_type": "defer"}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        html = (await (await client.get("/")).get_data()).decode()
    assert 'src="https://frontend.sentifyd.io/sentifyd-bot/main.js" defer' in html


async def test_health_endpoints(client: Client) -> None:
    assert (await (await client.get("/healthz")).get_json())["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and (await ready.get_json())["checks"]["store"] == "ok"
