"""Serving under ``server.base_path``: routes, rendered URLs, redirects, cookie scope, and the
paths that must never reach a route."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge.app import create_app
from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.errors import ConfigError
from bridge.web.mount import Mount, path_problem
from bridge.wiring import Bridge
from support.app import login, site_cookie
from support.config import API_KEY, AVATAR_ID, PREMIUM_API_KEY, PREMIUM_ID, make_settings
from support.deploy import raw_request
from support.live import LiveServer, free_port

BASE = "/avatar"
SHOP_LOGIN = "/login?next={next}"


def mounted(**server: Any) -> dict[str, Any]:
    return {
        "server": {"base_path": BASE, **server},
        "login": {"cookie": {"login_url": SHOP_LOGIN}},
    }


@pytest.fixture
async def app(make_app: Callable[..., Quart]) -> AsyncIterator[Quart]:
    application = make_app(make_settings(mounted()))
    async with application.test_app():
        yield application


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


# --- the setting ----------------------------------------------------------------------------


def test_base_path_defaults_to_the_root() -> None:
    assert make_settings().server.base_path == "/"


@pytest.mark.parametrize("value", ["/", "/avatar", "/help/avatar", "/a-b_c.d~e"])
def test_plain_base_paths_are_accepted(value: str) -> None:
    assert make_settings({"server": {"base_path": value}}).server.base_path == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "avatar",
        "/avatar/",
        "//avatar",
        "/help//avatar",
        "/help/../avatar",
        "/./avatar",
        "/..",
        "/av%61tar",
        "/help%2Favatar",
        "/ava tar",
        "/avatar\t",
        "/help\\avatar",
        "/avatar?x=1",
        "/avatar#top",
        "/avätar",
    ],
)
def test_unsafe_base_paths_stop_startup(value: str) -> None:
    with pytest.raises(ConfigError, match="server.base_path"):
        make_settings({"server": {"base_path": value}})


def test_urls_for_other_engineers_are_under_the_base_path() -> None:
    overrides = {
        **mounted(public_url="https://shop.example.com"),
        "session": {"cookie_secure": True},
    }
    settings = make_settings(overrides)
    server = settings.server
    assert server.path_for("/callback") == "/avatar/callback"
    assert server.url_for("/callback") == "https://shop.example.com/avatar/callback"
    with pytest.raises(ValueError):
        server.path_for("callback")


async def test_bridge_url_helpers(app: Quart) -> None:
    bridge = Bridge.of(app)
    assert bridge.url("/callback") == "/avatar/callback"
    assert bridge.public_url_for("/callback") == "http://127.0.0.1:8000/avatar/callback"
    assert bridge.page_path("default") == "/avatar/"
    assert bridge.page_path("premium") == "/avatar/avatars/premium"
    assert bridge.token_path("premium") == "/avatar/request_tokens/premium"


# --- served under the base path, and only there ---------------------------------------------


async def test_token_endpoint_is_served_under_the_base_path(client: Client, app: Quart) -> None:
    login(client, app)
    response = await client.get("/avatar/request_tokens")
    assert response.status_code == 200
    assert "accessToken" in (await response.get_json())["tokens"]


@pytest.mark.parametrize(
    "path", ["/request_tokens", "/", "/healthz", "/static/bridge.css", "/avatars/premium"]
)
async def test_nothing_is_served_outside_the_base_path(
    client: Client, app: Quart, path: str
) -> None:
    login(client, app)
    response = await client.get(path)
    assert response.status_code == 404
    assert (await response.get_json())["error"] == "not_found"
    assert "Set-Cookie" not in response.headers


async def test_health_and_static_files_move_with_the_base_path(client: Client) -> None:
    assert (await client.get("/avatar/healthz")).status_code == 200
    css = await client.get("/avatar/static/bridge.css")
    assert css.status_code == 200 and css.mimetype == "text/css"


async def test_base_path_without_slash_redirects_to_the_page(client: Client) -> None:
    response = await client.get("/avatar", query_string={"next": "//evil.example"})
    assert response.status_code == 308
    assert response.headers["Location"] == "/avatar/"


async def test_page_renders_urls_under_the_base_path(client: Client, app: Quart) -> None:
    login(client, app, groups=["customers"])
    response = await client.get("/avatar/")
    assert response.status_code == 200
    html = (await response.get_data()).decode()
    assert 'token-endpoint="/avatar/request_tokens"' in html
    assert 'token_endpoint="/avatar/request_tokens"' in html
    assert 'href="/avatar/static/bridge.css"' in html
    assert 'href="/avatar/avatars/premium"' in html  # the switcher to the other avatar
    assert not re.search(r'(href|src|action)="/(?!avatar/|login)', html)


async def test_premium_page_points_at_its_token_endpoint(client: Client, app: Quart) -> None:
    login(client, app, groups=["customers"])
    html = (await (await client.get("/avatar/avatars/premium")).get_data()).decode()
    assert 'token-endpoint="/avatar/request_tokens/premium"' in html


async def test_logged_out_visitor_is_sent_to_login_with_next_under_the_base_path(
    client: Client,
) -> None:
    response = await client.get("/avatar/avatars/premium")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/avatar/avatars/premium"


async def test_token_endpoint_login_url_comes_back_under_the_base_path(client: Client) -> None:
    response = await client.get("/avatar/request_tokens")
    assert response.status_code == 401
    assert (await response.get_json())["login_url"] == "/login?next=/avatar/"


async def test_root_path_already_set_by_the_server_is_not_stripped_twice(
    client: Client, app: Quart
) -> None:
    page = await client.get("/avatar/avatars/premium", root_path="/avatar")
    assert page.status_code == 302
    assert page.headers["Location"] == "/login?next=/avatar/avatars/premium"
    login(client, app)
    response = await client.get("/avatar/request_tokens", root_path="/avatar")
    assert response.status_code == 200
    assert (await client.get("/avatar/healthz", root_path="/avatar")).status_code == 200


async def test_a_different_root_path_is_refused(client: Client) -> None:
    response = await client.get("/avatar/healthz", root_path="/elsewhere")
    assert response.status_code == 404


async def test_root_base_path_serves_at_the_root(make_app: Callable[..., Quart]) -> None:
    application = make_app(make_settings())
    async with application.test_app():
        client = application.test_client()
        assert (await client.get("/healthz")).status_code == 200
        assert Bridge.of(application).token_path("default") == "/request_tokens"


# --- paths that must never reach a route ----------------------------------------------------

BAD_PATHS = [
    # (path as the client sends it, expected status)
    ("/avatar/../healthz", 400),
    ("/avatar/./request_tokens", 400),
    ("/avatar/static/../../healthz", 400),
    ("/avatar/request_tokens/..", 400),
    ("//avatar/request_tokens", 400),
    ("/avatar//request_tokens", 400),
    ("/avatar/%2e%2e/healthz", 400),
    ("/avatar/request_tokens%2Fpremium", 400),
    ("/avatar/request_tokens%2fpremium", 400),
    ("/avatar/static%5Cbridge.css", 400),
    ("/avatar/static\\bridge.css", 400),
    ("/avatar%2Frequest_tokens", 400),
    ("/avatar/%72equest_tokens", 400),
    ("/avatar/request_tokens%00", 400),
    ("/AVATAR/request_tokens", 404),
    ("/Avatar/healthz", 404),
    ("/avatars/request_tokens", 404),
    ("/avatarx/healthz", 404),
    ("/healthz/../avatar/healthz", 400),
]


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn"])
def live_mounted(request: pytest.FixtureRequest) -> Iterator[tuple[LiveServer, Quart]]:
    """One bridge under /avatar on each ASGI server ``serve`` offers (uvicorn, the default, and
    hypercorn), which pass paths on as the client sent them (Quart's test client would decode
    %2F before the app sees it)."""
    fake = create_fake_sentifyd({API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID})
    application = create_app(
        make_settings(mounted()), sentifyd_transport=httpx.ASGITransport(app=fake)
    )
    server = LiveServer(application, server=request.param).start()
    yield server, application
    server.stop()


@pytest.mark.integration
@pytest.mark.parametrize(("path", "status"), BAD_PATHS)
def test_non_canonical_or_outside_paths_never_reach_a_route(
    live_mounted: tuple[LiveServer, Quart], path: str, status: int
) -> None:
    server, application = live_mounted
    cookie = "session=" + site_cookie(application, "alice", groups=["customers"])
    response = raw_request(server.port, path, {"Cookie": cookie})
    assert response.status == status, response.body
    body = response.json()
    assert isinstance(body, dict)
    assert body["error"] == ("bad_path" if status == 400 else "not_found")
    assert not response.cookies
    assert "alice" not in str(Bridge.of(application).store.snapshot())  # type: ignore[attr-defined]


@pytest.mark.integration
def test_the_same_live_bridge_serves_the_canonical_path(
    live_mounted: tuple[LiveServer, Quart],
) -> None:
    server, application = live_mounted
    # Another user than above, so the refused requests' check of the store stays meaningful.
    cookie = "session=" + site_cookie(application, "carol", groups=["customers"])
    response = raw_request(server.port, "/avatar/request_tokens/premium", {"Cookie": cookie})
    assert response.status == 200
    assert response.cookies and response.cookies[0].startswith("sentifyd_bridge=")


@pytest.mark.parametrize(
    "path", ["/request_tokens/../healthz", "//healthz", "/./healthz", "/static/../app.py"]
)
async def test_canonical_paths_are_required_at_the_root_too(
    make_app: Callable[..., Quart], path: str
) -> None:
    application = make_app(make_settings())
    async with application.test_app():
        response = await application.test_client().get(path)
        assert response.status_code == 400
        assert (await response.get_json())["error"] == "bad_path"


@pytest.mark.parametrize(
    ("path", "raw", "reason"),
    [
        # What hypercorn hands over: ``path`` percent-decoded, ``raw_path`` as sent.
        ("/avatar/a/b", b"/avatar/a%2Fb", "encoded"),
        ("/avatar/a\\b", b"/avatar/a%5Cb", "encoded"),
        ("/avatar/../x", b"/avatar/%2E%2E/x", "encoded"),
        ("/avatar/%2e", b"/avatar/%252e", "encoded"),
        ("/avatar/admin", b"/avatar/%61dmin", "encoded"),
        ("/avatar/x-y", b"/avatar/x%2dy", "encoded"),
        ("/avatar/a\x00", b"/avatar/a%00", "encoded"),
        ("/avatar/x%zz", b"/avatar/x%zz", "encoded"),
        ("/avatar/x%", b"/avatar/x%", "encoded"),
        ("/avatar/é", b"/avatar/\xc3\xa9", "bad_character"),
        ("avatar/x", b"avatar/x", "not_absolute"),
        ("/avatar/a/../b", b"/avatar/a/../b", "dot_segment"),
        # Escapes an id may need stay allowed: they cannot change where the path leads.
        ("/avatar/x y", b"/avatar/x%20y", None),
        ("/avatar/a@b", b"/avatar/a%40b", None),
        ("/avatar/é", b"/avatar/%C3%A9", None),
        ("/avatar/x", b"/avatar/x", None),
    ],
)
def test_path_problem_checks_decoded_and_raw_path(
    path: str, raw: bytes, reason: str | None
) -> None:
    assert path_problem(path, raw) == reason


async def test_middleware_refuses_before_the_app_runs() -> None:
    reached: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    mount = Mount(app, BASE)
    scope = {"type": "http", "path": "/avatar/a/b", "raw_path": b"/avatar/a%2Fb", "headers": []}
    await mount(scope, receive, send)
    assert not reached and sent[0]["status"] == 400
    at_root = {"type": "http", "path": "/x/y", "raw_path": b"/x%2fy", "headers": []}
    await Mount(app, "/")(at_root, receive, send)
    assert not reached and sent[2]["status"] == 400
    await mount({**scope, "path": "/avatar/x", "raw_path": b"/avatar/x"}, receive, send)
    assert reached and reached[0]["root_path"] == BASE and reached[0]["path"] == "/avatar/x"
    assert "root_path" not in scope  # the caller's scope is left alone


# --- cookie scope ---------------------------------------------------------------------------


def set_cookie(response: Any) -> str:
    cookies = response.headers.getlist("Set-Cookie")
    assert len(cookies) == 1, cookies
    return str(cookies[0])


async def test_cookie_path_is_the_base_path(client: Client, app: Quart) -> None:
    login(client, app)
    cookie = set_cookie(await client.get("/avatar/request_tokens"))
    assert cookie.startswith("sentifyd_bridge=")
    assert "Path=/avatar;" in cookie + ";" and "Domain" not in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


async def test_secure_cookie_under_a_base_path_uses_the_secure_prefix(
    make_app: Callable[..., Quart],
) -> None:
    application = make_app(make_settings({**mounted(), "session": {"cookie_secure": True}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        first = await client.get("/avatar/request_tokens", scheme="https")
        cookie = set_cookie(first)
        assert cookie.startswith("__Secure-sentifyd_bridge=")
        assert "Secure" in cookie and "Path=/avatar;" in cookie + ";" and "Domain" not in cookie
        # The browser sends it back under the base path, and the bridge reads it there.
        again = await client.get("/avatar/request_tokens", scheme="https")
        assert again.status_code == 200 and "Set-Cookie" not in again.headers


async def test_secure_cookie_at_the_root_keeps_the_host_prefix(
    make_app: Callable[..., Quart],
) -> None:
    application = make_app(make_settings({"session": {"cookie_secure": True}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        cookie = set_cookie(await client.get("/request_tokens", scheme="https"))
        assert cookie.startswith("__Host-sentifyd_bridge=") and "Path=/;" in cookie + ";"


@pytest.mark.parametrize(
    ("base", "secure", "name"),
    [
        ("/", True, "__Host-sentifyd_bridge"),
        ("/", False, "sentifyd_bridge"),
        ("/avatar", True, "__Secure-sentifyd_bridge"),
        ("/avatar", False, "sentifyd_bridge"),
    ],
)
def test_cookie_name_and_path_per_base_path(base: str, secure: bool, name: str) -> None:
    settings = make_settings({"server": {"base_path": base}, "session": {"cookie_secure": secure}})
    assert settings.session.effective_cookie_name == name
    assert settings.session.cookie_path == base


def test_cookie_path_is_not_a_setting_of_its_own() -> None:
    with pytest.raises(ConfigError, match="session.cookie_path: unknown setting"):
        make_settings({"session": {"cookie_path": "/"}})


async def test_session_end_clears_the_cookie_on_its_own_path(client: Client, app: Quart) -> None:
    login(client, app)
    assert (await client.get("/avatar/request_tokens")).status_code == 200
    client.delete_cookie("localhost", "session")  # the visitor signs out of the site
    response = await client.get("/avatar/request_tokens")
    assert response.status_code == 401
    cleared = set_cookie(response)
    assert cleared.startswith("sentifyd_bridge=;") and "Path=/avatar;" in cleared + ";"


async def test_the_site_cookie_is_never_written(client: Client, app: Quart) -> None:
    login(client, app, groups=["customers"])
    for path in ("/avatar/", "/avatar/request_tokens", "/avatar/avatars/premium"):
        response = await client.get(path)
        for header in response.headers.getlist("Set-Cookie"):
            assert not header.startswith("session=")


@pytest.mark.integration
async def test_hypercorn_root_path_is_honoured_not_stripped_twice() -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    application = create_app(make_settings(mounted()))
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.root_path = BASE  # hypercorn --root-path /avatar
    config.accesslog = None
    stop = asyncio.Event()
    server = asyncio.ensure_future(serve(application, config, shutdown_trigger=stop.wait))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(200):  # bounded wait for the real server to listen
                try:
                    health = await http.get("/avatar/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.025)
            else:
                pytest.fail("hypercorn did not start listening")
            assert health.status_code == 200
            assert (await http.get("/healthz")).status_code == 404
            page = await http.get("/avatar/")
            assert page.headers["Location"] == "/login?next=/avatar/"
            assert (await http.get("/avatar/static/bridge.css")).status_code == 200
    finally:
        stop.set()
        await server
