"""The third way in: the bridge asks the site's own "who am I" URL, a real HTTP server here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from quart import Quart, redirect, request
from quart.typing import TestClientProtocol as Client

from bridge.app import create_app
from bridge.errors import ConfigError
from bridge.settings.loader import load_settings
from bridge.wiring import Bridge
from support.app import Clock
from support.config import TEST_ENV, base_config
from support.live import LiveServer

pytestmark = pytest.mark.integration


class Site:
    """A site with its own sessions and a /whoami endpoint, recording every call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.signed_out: set[str] = set()
        self.app = Quart("site")
        self.app.add_url_rule("/whoami", "whoami", self.whoami)

    async def whoami(self) -> Any:
        self.calls.append(
            {"cookies": dict(request.cookies), "header": request.headers.get("Cookie")}
        )
        sid = request.cookies.get("sessionid", "")
        if sid in self.signed_out:
            return {"error": "not signed in"}, 401
        if sid == "alice-session":
            return {"user_id": "alice", "groups": ["customers"], "email": "alice@example.com"}
        if sid == "bob-session":
            return {"user_id": 42, "groups": ["staff"]}
        if sid == "forbidden":
            return {"error": "locked"}, 403
        if sid == "broken":
            return "oops", 500
        if sid == "slow":
            await asyncio.sleep(1.0)
            return {"user_id": "slow"}
        if sid == "redirect":
            return redirect("/login")
        if sid == "no-user":
            return {"name": "Nobody"}
        if sid == "html":
            return "<html>hello</html>", 200
        return {"error": "not signed in"}, 401


@pytest.fixture
def site() -> Iterator[tuple[Site, LiveServer]]:
    the_site = Site()
    server = LiveServer(the_site.app).start()
    yield the_site, server
    server.stop()


def check_config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "url": url,
        "cookies": ["sessionid", "csrftoken"],
        "timeout": 0.3,
        "cache_ttl": 10,
        "user_field": "user_id",
        "claim_fields": ["groups", "email"],
        "login_url": "https://shop.example.com/login?next={next}",
        **extra,
    }


@pytest.fixture
async def app(site: tuple[Site, LiveServer], fake: Quart, clock: Clock) -> AsyncIterator[Quart]:
    data = base_config()
    data["login"] = {"session_check": check_config(site[1].url + "/whoami")}
    settings = load_settings(None, TEST_ENV, overrides=data)
    application = create_app(
        settings, sentifyd_transport=httpx.ASGITransport(app=fake), clock=clock
    )
    async with application.test_app():
        yield application


def visit(app: Quart, sessionid: str | None, **others: str) -> Client:
    client = app.test_client()
    if sessionid is not None:
        client.set_cookie("localhost", "sessionid", sessionid)
    for name, value in others.items():
        client.set_cookie("localhost", name, value)
    return client


async def test_signed_in_visitor_gets_tokens(app: Quart) -> None:
    client = visit(app, "alice-session")
    assert (await client.get("/request_tokens")).status_code == 200
    assert (await client.get("/request_tokens/premium")).status_code == 200


async def test_access_rules_apply_to_the_sites_claims(app: Quart) -> None:
    client = visit(app, "bob-session")
    assert (await client.get("/request_tokens")).status_code == 200
    refused = await client.get("/request_tokens/premium")
    assert refused.status_code == 403 and (await refused.get_json())["error"] == "forbidden"


@pytest.mark.parametrize("sessionid", ["unknown", "forbidden"])
async def test_401_or_403_from_the_site_means_signed_out(app: Quart, sessionid: str) -> None:
    response = await visit(app, sessionid).get("/request_tokens")
    body = await response.get_json()
    assert response.status_code == 401 and body["error"] == "login_required"
    assert body["login_url"] == "https://shop.example.com/login?next=/"


async def test_no_cookie_means_no_call(app: Quart, site: tuple[Site, LiveServer]) -> None:
    assert (await visit(app, None).get("/request_tokens")).status_code == 401
    assert site[0].calls == []


async def test_only_the_named_cookies_are_forwarded(
    app: Quart, site: tuple[Site, LiveServer]
) -> None:
    client = visit(
        app, "alice-session", csrftoken="c1", other="do-not-send", sentifyd_bridge="x" * 43
    )
    await client.get("/request_tokens")
    [call] = site[0].calls
    assert call["cookies"] == {"sessionid": "alice-session", "csrftoken": "c1"}


async def test_answers_are_cached_briefly_per_cookie_value(
    app: Quart, site: tuple[Site, LiveServer], clock: Clock
) -> None:
    alice = visit(app, "alice-session")
    for _ in range(3):
        assert (await alice.get("/session")).status_code == 200
    assert len(site[0].calls) == 1
    await visit(app, "bob-session").get("/session")
    assert len(site[0].calls) == 2
    clock.advance(11)
    await alice.get("/session")
    assert len(site[0].calls) == 3


async def test_site_logout_stops_the_avatar(
    app: Quart, site: tuple[Site, LiveServer], clock: Clock
) -> None:
    client = visit(app, "alice-session")
    assert (await client.get("/request_tokens")).status_code == 200
    ended: list[dict[str, Any]] = []
    Bridge.of(app).lifecycle.listeners.append(ended.append)
    site[0].signed_out.add("alice-session")
    clock.advance(11)
    assert (await client.get("/request_tokens")).status_code == 401
    assert [e["reason"] for e in ended if e["event"] == "session_ended"] == ["site_logout"]


@pytest.mark.parametrize("sessionid", ["broken", "slow", "redirect", "no-user", "html"])
async def test_unusable_answer_is_503(
    app: Quart, site: tuple[Site, LiveServer], sessionid: str
) -> None:
    response = await visit(app, sessionid).get("/request_tokens")
    assert response.status_code == 503
    body = await response.get_json()
    assert body["error"] == "identity_provider_unavailable"
    assert sessionid not in str(body)
    assert len(site[0].calls) == 1  # a redirect is not followed


async def test_unreachable_site_is_503_and_recovers(
    app: Quart, site: tuple[Site, LiveServer]
) -> None:
    the_site, server = site
    server.stop()
    response = await visit(app, "alice-session").get("/request_tokens")
    assert response.status_code == 503
    assert (await response.get_json())["error"] == "identity_provider_unavailable"
    again = LiveServer(the_site.app, port=server.port).start()
    try:
        assert (await visit(app, "alice-session").get("/request_tokens")).status_code == 200
    finally:
        again.stop()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"url": "ftp://site/whoami"}, "login.session_check.url"),
        ({"url": "http://shop.example.com/whoami"}, "https only"),
        ({"cookies": []}, "login.session_check.cookies"),
        ({"login_url": ""}, "login.session_check.login_url"),
        ({"cache_ttl": 3600}, "login.session_check.cache_ttl"),
        ({"bogus": 1}, "login.session_check.bogus"),
    ],
)
def test_bad_settings_are_refused(extra: dict[str, Any], message: str) -> None:
    data = base_config()
    data["login"] = {"session_check": {**check_config("https://shop.example.com/whoami"), **extra}}
    with pytest.raises(ConfigError, match=message):
        load_settings(None, TEST_ENV, overrides=data)


async def test_an_address_over_its_limit_is_refused_before_the_site_is_asked(
    site: tuple[Site, LiveServer], fake: Quart, clock: Clock
) -> None:
    data = base_config()
    data["login"] = {"session_check": check_config(site[1].url + "/whoami")}
    data["limits"] = {"per_ip": "2/minute"}
    settings = load_settings(None, TEST_ENV, overrides=data)
    application = create_app(
        settings, sentifyd_transport=httpx.ASGITransport(app=fake), clock=clock
    )
    async with application.test_app():
        codes = [
            (await visit(application, "unknown").get("/request_tokens")).status_code
            for _ in range(3)
        ]
        assert codes == [401, 401, 429]
        asked = len(site[0].calls)
        refused = await visit(application, "alice-session").get("/request_tokens")
        assert refused.status_code == 429  # the site's who-am-I is not asked again
        assert len(site[0].calls) == asked
        clock.advance(60)
        assert (await visit(application, "alice-session").get("/request_tokens")).status_code == 200
