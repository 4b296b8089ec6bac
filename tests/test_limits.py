"""Rate limits on the token endpoint: per session, per client IP, Retry-After, settings."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.errors import ConfigError
from bridge.limits import client_bucket
from bridge.settings import RateLimit, parse_rate
from conftest import Clock, LiveServer, bridge_of, login, make_settings, site_cookie


def client_at(ip: str) -> dict[str, Any]:
    return {"scope_base": {"client": (ip, 50000)}}


async def test_session_over_its_limit_gets_429_with_retry_after(
    make_app: Any, clock: Clock
) -> None:
    clock.now = 1_800_000_000.0 + 15  # 15 s into a minute window
    application = make_app(make_settings({"limits": {"per_session": "3/minute"}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        for _ in range(4):  # the first, cookie-less request counts per IP only
            assert (await client.get("/request_tokens")).status_code == 200
        refused = await client.get("/request_tokens")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "45"
        body = await refused.get_json()
        assert body["error"] == "rate_limited" and body["retry_after"] == 45
        assert refused.headers["Cache-Control"] == "no-store"


async def test_limit_resets_in_the_next_window(make_app: Any, clock: Clock) -> None:
    application = make_app(make_settings({"limits": {"per_session": "1/minute"}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        await client.get("/request_tokens")
        assert (await client.get("/request_tokens")).status_code == 200
        assert (await client.get("/request_tokens")).status_code == 429
        clock.advance(60)
        assert (await client.get("/request_tokens")).status_code == 200


async def test_refreshes_and_cache_hits_count_too(make_app: Any) -> None:
    application = make_app(make_settings({"limits": {"per_session": "2/minute"}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        first = await (await client.get("/request_tokens")).get_json()
        handle = first["tokens"]["refreshToken"]
        assert (await client.get("/request_tokens")).status_code == 200  # cache hit
        refresh = await client.get("/request_tokens", query_string={"refreshToken": handle})
        assert refresh.status_code == 200
        again = await client.get("/request_tokens", query_string={"refreshToken": handle})
        assert again.status_code == 429


async def test_sessions_have_separate_budgets(make_app: Any) -> None:
    application = make_app(make_settings({"limits": {"per_session": "1/minute"}}))
    async with application.test_app():
        alice, bob = application.test_client(), application.test_client()
        login(alice, application, "alice")
        login(bob, application, "bob")
        for client in (alice, bob):
            await client.get("/request_tokens")
            assert (await client.get("/request_tokens")).status_code == 200
        assert (await alice.get("/request_tokens")).status_code == 429
        assert (await bob.get("/request_tokens")).status_code == 429


async def test_per_ip_limit_holds_cookie_less_floods(make_app: Any) -> None:
    settings = make_settings({"limits": {"per_ip": "3/minute", "per_session": "off"}})
    application = make_app(settings)
    async with application.test_app():
        attacker = application.test_client()
        statuses = [
            (await attacker.get("/request_tokens", **client_at("198.51.100.9"))).status_code
            for _ in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]  # counted before any identity work
        other = application.test_client()
        login(other, application, "bob")
        ok = await other.get("/request_tokens", **client_at("198.51.100.10"))
        assert ok.status_code == 200


async def test_rate_limited_request_changes_no_session(make_app: Any) -> None:
    application = make_app(make_settings({"limits": {"per_session": "1/minute"}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        await client.get("/request_tokens")
        await client.get("/request_tokens")
        before = bridge_of(application).store.snapshot()  # type: ignore[attr-defined]
        assert (await client.get("/request_tokens")).status_code == 429
        assert bridge_of(application).store.snapshot() == before  # type: ignore[attr-defined]


def test_ipv6_clients_are_bucketed_by_64() -> None:
    assert client_bucket("2001:db8:1:2:aaaa::1") == client_bucket("2001:db8:1:2:bbbb::2")
    assert client_bucket("2001:db8:1:2::1") != client_bucket("2001:db8:1:3::1")
    assert client_bucket("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_bucket(None) == client_bucket("<local>") == "unknown"


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("30/minute", RateLimit(30, 60)),
        ("100 / 5 minutes", RateLimit(100, 300)),
        ("1/second", RateLimit(1, 1)),
        ("2/hours", RateLimit(2, 3600)),
        ("off", RateLimit(0, 60)),
    ],
)
def test_rates_parse(text: str, limit: RateLimit) -> None:
    assert parse_rate(text, "limits.per_ip") == limit


@pytest.mark.parametrize(
    "limits", [{"per_ip": "30"}, {"per_ip": "0/minute"}, {"per_session": 30}, {"burst": "1"}]
)
def test_bad_limits_are_refused(limits: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="limits"):
        make_settings({"limits": limits})


def test_defaults_are_on() -> None:
    limits = make_settings().limits
    assert limits.per_session == RateLimit(30, 60) and limits.per_ip == RateLimit(120, 60)


@pytest.mark.integration
def test_live_server_limits_by_peer_address(
    live_fake: LiveServer, live_bridge_factory: Any
) -> None:
    import httpx

    settings = make_settings(
        {
            "sentifyd": {"backend": live_fake.url},
            "limits": {"per_ip": "2/hour", "per_session": "off"},
        }
    )
    server, application = live_bridge_factory(settings)
    cookie = site_cookie(application)
    with httpx.Client(base_url=server.url, cookies={"session": cookie}) as http:
        codes = [http.get("/request_tokens").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert 0 < int(http.get("/request_tokens").headers["Retry-After"]) <= 3600
