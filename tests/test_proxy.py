"""Forwarded headers: believed from the configured proxies only, ignored from anyone else, and
never able to move a redirect or a URL the bridge renders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Quart, jsonify, request
from quart.typing import TestClientProtocol as Client

from bridge.errors import ConfigError
from bridge.web.proxy import ProxyHeaders, TrustedProxies
from support.app import login
from support.config import make_settings

PROXY = "10.0.0.2"
VISITOR = "203.0.113.7"
STRANGER = "198.51.100.9"
SHOP_LOGIN = "/login?next={next}"


def with_whoami(application: Quart) -> Quart:
    """Add a route that reports what the app sees of the request (test only)."""

    async def whoami() -> Any:
        return jsonify(
            {
                "remote_addr": request.remote_addr,
                "scheme": request.scheme,
                "host": request.host,
                "trusted_proxy": request.scope.get("bridge.trusted_proxy"),
                "peer": request.scope.get("bridge.peer"),
                "forwarded": sorted(
                    k for k in request.headers.keys() if "Forward" in k or "Real" in k
                ),
            }
        )

    application.add_url_rule("/_whoami", "whoami", whoami)
    return application


def config(base: str = "/", trusted: list[str] | None = None) -> dict[str, Any]:
    return {
        "server": {"base_path": base, "trusted_proxies": trusted or []},
        "login": {"cookie": {"login_url": SHOP_LOGIN}},
    }


@pytest.fixture
async def app(make_app: Callable[..., Quart]) -> AsyncIterator[Quart]:
    application = with_whoami(make_app(make_settings(config(trusted=["10.0.0.0/8"]))))
    async with application.test_app():
        yield application


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


async def whoami(client: Client, peer: str, headers: dict[str, str], path: str = "/_whoami") -> Any:
    response = await client.get(path, headers=headers, scope_base={"client": (peer, 41000)})
    assert response.status_code == 200
    return await response.get_json()


FORWARDED = {
    "X-Forwarded-For": "192.0.2.1",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Prefix": "/evil",
    "X-Forwarded-Port": "444",
    "Forwarded": "for=192.0.2.1;proto=https",
    "X-Real-IP": "192.0.2.1",
}


# --- untrusted peers ------------------------------------------------------------------------


async def test_untrusted_peer_forwarded_headers_are_ignored(client: Client) -> None:
    seen = await whoami(client, STRANGER, FORWARDED)
    assert seen["remote_addr"] == STRANGER
    assert seen["scheme"] == "http"
    assert seen["host"] == "localhost"
    assert seen["trusted_proxy"] is False
    assert seen["forwarded"] == []  # removed, so no later code can be tempted by them


async def test_no_peer_is_trusted_by_default(make_app: Callable[..., Quart]) -> None:
    application = with_whoami(make_app(make_settings(config())))
    async with application.test_app():
        seen = await whoami(application.test_client(), "127.0.0.1", FORWARDED)
        assert seen["remote_addr"] == "127.0.0.1" and seen["trusted_proxy"] is False


async def test_garbage_forwarded_headers_from_anyone_are_not_an_error(client: Client) -> None:
    junk = {
        "X-Forwarded-For": "not-an-ip, ,;;",
        "X-Forwarded-Proto": "gopher",
        "X-Forwarded-Host": "a b\\c/d",
        "X-Forwarded-Prefix": "/../..",
    }
    for peer in (STRANGER, PROXY):
        seen = await whoami(client, peer, junk)
        assert seen["remote_addr"] == peer
        assert seen["scheme"] == "http" and seen["host"] == "localhost"


# --- trusted proxies ------------------------------------------------------------------------


async def test_trusted_proxy_forwarded_headers_are_used(client: Client) -> None:
    seen = await whoami(
        client,
        PROXY,
        {
            "X-Forwarded-For": VISITOR,
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "shop.example.com",
        },
    )
    assert seen["remote_addr"] == VISITOR
    assert seen["scheme"] == "https"
    assert seen["host"] == "shop.example.com"
    assert seen["trusted_proxy"] is True and seen["peer"] == PROXY
    assert seen["forwarded"] == ["X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"]


async def test_right_most_address_not_a_trusted_proxy_is_the_client(client: Client) -> None:
    # The visitor wrote "6.6.6.6" themselves; our two proxies appended the rest.
    chain = f"6.6.6.6, {VISITOR}, 10.1.1.1"
    seen = await whoami(client, PROXY, {"X-Forwarded-For": chain})
    assert seen["remote_addr"] == VISITOR


async def test_several_forwarded_for_headers_read_as_one_chain(client: Client) -> None:
    response = await client.get(
        "/_whoami",
        headers=[("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", f"{VISITOR}, 10.1.1.1")],
        scope_base={"client": (PROXY, 41000)},
    )
    assert (await response.get_json())["remote_addr"] == VISITOR


async def test_when_every_hop_is_trusted_the_left_most_is_the_client(client: Client) -> None:
    seen = await whoami(client, PROXY, {"X-Forwarded-For": "10.9.9.9, 10.1.1.1"})
    assert seen["remote_addr"] == "10.9.9.9"


async def test_an_unreadable_hop_stops_the_walk(client: Client) -> None:
    seen = await whoami(client, PROXY, {"X-Forwarded-For": f"{VISITOR}, junk"})
    assert seen["remote_addr"] == PROXY  # nothing trustworthy beyond the proxy itself
    seen = await whoami(client, PROXY, {"X-Forwarded-For": "junk, 10.1.1.1"})
    assert seen["remote_addr"] == "10.1.1.1"


async def test_ipv4_mapped_peer_matches_an_ipv4_proxy(client: Client) -> None:
    seen = await whoami(client, f"::ffff:{PROXY}", {"X-Forwarded-For": VISITOR})
    assert seen["remote_addr"] == VISITOR and seen["trusted_proxy"] is True


def test_trusted_proxies_accept_addresses_and_cidrs() -> None:
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])
    for inside in ("127.0.0.1", "10.200.0.1", "::1", "fd12::1", "::ffff:10.0.0.1", "[::1]"):
        assert inside in trusted
    for outside in ("127.0.0.2", "11.0.0.1", "::2", "fe80::1", "localhost", "", "10.0.0.1:80"):
        assert outside not in trusted
    assert "127.0.0.1" not in TrustedProxies([])


def test_trusted_proxies_must_be_addresses_or_cidrs() -> None:
    with pytest.raises(ConfigError, match="server.trusted_proxies"):
        make_settings({"server": {"trusted_proxies": ["proxy.internal"]}})


async def test_asgi_scope_is_copied_not_changed() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    middleware = ProxyHeaders(app, ["10.0.0.0/8"])
    scope = {
        "type": "http",
        "path": "/",
        "client": (PROXY, 1),
        "scheme": "http",
        "headers": [(b"x-forwarded-for", VISITOR.encode())],
    }
    await middleware(scope, None, None)  # type: ignore[arg-type]
    assert seen[0]["client"] == (VISITOR, 0) and scope["client"] == (PROXY, 1)
    await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen[1] == {"type": "lifespan"}


# --- nothing forwarded moves a redirect or a rendered URL -----------------------------------


@pytest.mark.parametrize("base", ["/", "/avatar"])
@pytest.mark.parametrize("peer", [STRANGER, PROXY])
async def test_forwarded_headers_never_change_a_redirect(
    make_app: Callable[..., Quart], base: str, peer: str
) -> None:
    application = make_app(make_settings(config(base, trusted=["10.0.0.0/8"])))
    page = "/avatar/" if base != "/" else "/"
    async with application.test_app():
        client = application.test_client()
        response = await client.get(page, headers=FORWARDED, scope_base={"client": (peer, 1)})
        assert response.status_code == 302
        assert response.headers["Location"] == f"/login?next={page}"
        tokens = await client.get(
            f"{page}request_tokens", headers=FORWARDED, scope_base={"client": (peer, 1)}
        )
        assert (await tokens.get_json())["login_url"] == f"/login?next={page}"


@pytest.mark.parametrize("peer", [STRANGER, PROXY])
async def test_forwarded_prefix_never_changes_a_rendered_url(
    make_app: Callable[..., Quart], peer: str
) -> None:
    application = make_app(make_settings(config("/avatar", trusted=["10.0.0.0/8"])))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        response = await client.get("/avatar/", headers=FORWARDED, scope_base={"client": (peer, 1)})
        html = (await response.get_data()).decode()
        assert 'token-endpoint="/avatar/request_tokens"' in html
        assert "/evil" not in html and "evil.example" not in html


async def test_untrusted_forwarded_prefix_cannot_reach_a_stripped_path(
    make_app: Callable[..., Quart],
) -> None:
    application = make_app(make_settings(config("/avatar", trusted=["10.0.0.0/8"])))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        response = await client.get(
            "/request_tokens",
            headers={"X-Forwarded-Prefix": "/avatar"},
            scope_base={"client": (STRANGER, 1)},
        )
        assert response.status_code == 404


async def test_trusted_forwarded_prefix_equal_to_base_path_restores_a_stripped_path(
    make_app: Callable[..., Quart],
) -> None:
    # For a proxy that strips the prefix (nginx ``proxy_pass http://bridge/;``) and says so.
    application = make_app(make_settings(config("/avatar", trusted=["10.0.0.0/8"])))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        peer = {"client": (PROXY, 1)}
        stripped = await client.get("/request_tokens", scope_base=peer)
        assert stripped.status_code == 404
        told = await client.get(
            "/request_tokens", headers={"X-Forwarded-Prefix": "/avatar/"}, scope_base=peer
        )
        assert told.status_code == 200
        cookie = told.headers["Set-Cookie"]
        assert "Path=/avatar;" in cookie + ";"
        # A proxy that keeps the path and sends the header too is not prefixed twice.
        kept = await client.get(
            "/avatar/request_tokens", headers={"X-Forwarded-Prefix": "/avatar"}, scope_base=peer
        )
        assert kept.status_code == 200
        other = await client.get(
            "/request_tokens", headers={"X-Forwarded-Prefix": "/elsewhere"}, scope_base=peer
        )
        assert other.status_code == 404


async def test_secure_cookie_follows_public_url_not_forwarded_proto(
    make_app: Callable[..., Quart],
) -> None:
    application = make_app(make_settings(config(trusted=["10.0.0.0/8"])))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        response = await client.get(
            "/request_tokens",
            headers={"X-Forwarded-Proto": "https"},
            scope_base={"client": (PROXY, 1)},
        )
        cookie = response.headers["Set-Cookie"]
        # public_url is http://127.0.0.1 with cookie_secure = false: no header makes it Secure.
        assert cookie.startswith("sentifyd_bridge=") and "Secure" not in cookie
