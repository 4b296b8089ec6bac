"""Rate limits: per session, per new chain, per user, anonymous work per client address, the
avatar's upstream logins; Retry-After; settings."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from bridge.access.limits import RateLimiter, client_bucket
from bridge.errors import ConfigError, RateLimited, UpstreamBusy
from bridge.sessions.manager import SessionRecord
from bridge.settings.schema import LimitsSettings
from bridge.settings.values import RateLimit, parse_rate
from bridge.store.memory import MemoryStore
from support.app import Clock, bridge_of, login, site_cookie
from support.config import make_settings
from support.live import LiveServer


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
    assert limits.per_session == RateLimit(120, 60)
    assert limits.new_chains_per_session == RateLimit(30, 60)
    assert limits.new_sessions_per_user == RateLimit(10, 60)
    assert limits.sessions_per_user == 10
    assert limits.per_ip == RateLimit(120, 60)
    assert limits.login_per_ip == RateLimit(20, 60)
    assert not limits.upstream_logins_per_avatar.enabled
    assert make_settings().session.max_chains == 64


async def test_signed_in_visitors_never_count_per_address(make_app: Any) -> None:
    application = make_app(make_settings({"limits": {"per_ip": "2/minute"}}))
    async with application.test_app():
        for n in range(6):  # six customers behind one address, each a first request
            customer = application.test_client()
            login(customer, application, f"user{n}")
            response = await customer.get("/request_tokens", **client_at("203.0.113.5"))
            assert response.status_code == 200


async def test_refusals_count_per_address_and_live_sessions_still_pass(make_app: Any) -> None:
    application = make_app(make_settings({"limits": {"per_ip": "2/minute"}}))
    async with application.test_app():
        customer = application.test_client()
        login(customer, application)
        first = await customer.get("/request_tokens", **client_at("203.0.113.5"))
        assert first.status_code == 200
        stranger = application.test_client()
        codes = [
            (await stranger.get("/request_tokens", **client_at("203.0.113.5"))).status_code
            for _ in range(3)
        ]
        assert codes == [401, 401, 429]
        page = await stranger.get("/", **client_at("203.0.113.5"))  # identity checks too
        assert page.status_code == 429
        # The customer's live bridge session is not anonymous work: still served.
        again = await customer.get("/request_tokens", **client_at("203.0.113.5"))
        assert again.status_code == 200


async def test_a_new_customer_is_served_at_an_address_over_its_limit(make_app: Any) -> None:
    # The site's cookie is verified locally, so an address that anonymous traffic has pushed
    # over its limit still admits a customer with no bridge session yet.
    application = make_app(make_settings({"limits": {"per_ip": "2/minute"}}))
    async with application.test_app():
        stranger = application.test_client()
        codes = [
            (await stranger.get("/request_tokens", **client_at("203.0.113.8"))).status_code
            for _ in range(3)
        ]
        assert codes == [401, 401, 429]
        newcomer = application.test_client()
        login(newcomer, application, "late-customer")
        response = await newcomer.get("/request_tokens", **client_at("203.0.113.8"))
        assert response.status_code == 200
        page = await newcomer.get("/", **client_at("203.0.113.8"))
        assert page.status_code == 200


async def test_forbidden_answers_count_per_address(make_app: Any) -> None:
    application = make_app(make_settings({"limits": {"per_ip": "2/minute"}}))
    async with application.test_app():
        codes = []
        for n in range(3):
            visitor = application.test_client()
            login(visitor, application, f"nobody{n}")  # not in the premium avatar's group
            response = await visitor.get("/request_tokens/premium", **client_at("192.0.2.7"))
            codes.append(response.status_code)
        assert codes == [403, 403, 429]


async def test_new_sessions_per_user_are_limited_before_any_upstream_call(
    make_app: Any, fake_state: Any
) -> None:
    application = make_app(make_settings({"limits": {"new_sessions_per_user": "3/minute"}}))
    async with application.test_app():
        codes = []
        for _ in range(5):  # a script that never keeps the bridge's cookie
            script = application.test_client()
            login(script, application, "carol")
            response = await script.get("/request_tokens")
            codes.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
        assert codes == [200, 200, 200, 429, 429]
        assert fake_state.login_calls == 3


async def test_a_new_session_beyond_the_cap_evicts_the_oldest(make_app: Any, clock: Clock) -> None:
    application = make_app(make_settings({"limits": {"sessions_per_user": 2}}))
    async with application.test_app():
        bridge = bridge_of(application)
        clients = []
        for _ in range(3):
            browser = application.test_client()
            login(browser, application, "dave")
            assert (await browser.get("/request_tokens")).status_code == 200
            clients.append(browser)
            clock.advance(1)
        live = await bridge.sessions.sessions_of("dave")
        assert len(live) == 2
        events = await bridge.lifecycle.recent("dave", 50)
        evicted = [e for e in events if e.get("reason") == "evicted"]
        assert len(evicted) == 1
        assert evicted[0]["session"] not in {r.id for r in live}
        # The evicted browser's next request starts over; the newer two carry on.
        newest = await clients[2].get("/request_tokens")
        assert newest.status_code == 200 and "set-cookie" not in newest.headers


async def test_new_chain_flood_is_refused_before_the_session_is_touched(
    make_app: Any,
) -> None:
    application = make_app(make_settings({"limits": {"new_chains_per_session": "5/minute"}}))
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        tab = await (await client.get("/request_tokens")).get_json()
        codes = [(await client.get("/request_tokens")).status_code for _ in range(10)]
        assert codes == [200] * 5 + [429] * 5  # the first request counted as a new session
        refresh = await client.get(
            "/request_tokens", query_string={"refreshToken": tab["tokens"]["refreshToken"]}
        )
        assert refresh.status_code == 200


async def test_a_session_over_its_limit_with_stale_tokens_is_refused_before_calling_sentifyd(
    make_app: Any, clock: Clock, fake_state: Any
) -> None:
    settings = make_settings(
        {"limits": {"per_session": "1/day"}, "session": {"idle_timeout": 7200}}
    )
    application = make_app(settings)
    async with application.test_app():
        client = application.test_client()
        login(client, application)
        await client.get("/request_tokens")  # counted as the new session
        assert (await client.get("/request_tokens")).status_code == 200
        clock.advance(3600)  # the tokens expired; the same day's window
        assert (await client.get("/request_tokens")).status_code == 429
        assert fake_state.login_calls == 1


async def test_upstream_logins_per_avatar_spent_gives_503_cached_sessions_still_served(
    make_app: Any, fake_state: Any
) -> None:
    application = make_app(make_settings({"limits": {"upstream_logins_per_avatar": "2/minute"}}))
    async with application.test_app():
        served = []
        for n in range(2):
            browser = application.test_client()
            login(browser, application, f"early{n}")
            assert (await browser.get("/request_tokens")).status_code == 200
            served.append(browser)
        late = application.test_client()
        login(late, application, "late")
        busy = await late.get("/request_tokens")
        assert busy.status_code == 503
        assert (await busy.get_json())["error"] == "upstream_busy"
        assert int(busy.headers["Retry-After"]) >= 1
        assert fake_state.login_calls == 2
        for browser in served:  # cached tokens need no login: still served
            assert (await browser.get("/request_tokens")).status_code == 200


@pytest.mark.integration
def test_live_server_limits_anonymous_work_by_peer_address(
    live_fake: LiveServer, live_bridge_factory: Any
) -> None:
    import httpx

    settings = make_settings(
        {"sentifyd": {"backend": live_fake.url}, "limits": {"per_ip": "2/hour"}}
    )
    server, application = live_bridge_factory(settings)
    cookie = site_cookie(application)
    with httpx.Client(base_url=server.url, cookies={"session": cookie}) as customer:
        assert customer.get("/request_tokens").status_code == 200  # keeps its bridge cookie
        with httpx.Client(base_url=server.url) as stranger:
            codes = [stranger.get("/request_tokens").status_code for _ in range(3)]
            assert codes == [401, 401, 429]
            assert 0 < int(stranger.get("/request_tokens").headers["Retry-After"]) <= 3600
        assert customer.get("/request_tokens").status_code == 200


async def test_made_up_session_cookies_store_no_counters(make_app: Any) -> None:
    # Counting per session only once the session is found: a flood of random cookies must not
    # leave a counter in the store per cookie.
    application = make_app(make_settings({"limits": {"per_ip": "off"}}))
    async with application.test_app():
        store = bridge_of(application).store
        before = set(store.entries())  # type: ignore[attr-defined]
        for n in range(20):
            client = application.test_client()
            client.set_cookie("localhost", "sentifyd_bridge", f"{n:043d}")
            assert (await client.get("/request_tokens")).status_code == 401
        assert set(store.entries()) == before  # type: ignore[attr-defined]


# --- the limiter on its own: a memory store, the fake clock, a request that is only an address


def limiter_with(clock: Clock, **limits: RateLimit) -> tuple[RateLimiter, list[str]]:
    limiter = RateLimiter(LimitsSettings(**limits), MemoryStore(), clock)
    refused: list[str] = []
    limiter.on_limited = refused.append
    return limiter, refused


def a_record() -> SessionRecord:
    return SessionRecord(
        id="a" * 32,
        subject="alice",
        method="site_cookie",
        claims={},
        created_at=0.0,
        last_seen=0.0,
        expires_at=0.0,
    )


def request_from(ip: str) -> Any:
    return SimpleNamespace(remote_addr=ip)


def test_ipv4_clients_are_bucketed_by_their_own_address() -> None:
    assert client_bucket("192.0.2.1") == "192.0.2.1"


async def test_an_address_is_refused_once_its_anonymous_work_reaches_the_limit(
    clock: Clock,
) -> None:
    limiter, refused = limiter_with(clock, per_ip=RateLimit(2, 60))
    clock.now = 1_800_000_000.0 + 20  # 20 s into a minute window
    for _ in range(2):
        await limiter.check_address(request_from("192.0.2.1"))
        await limiter.count_anonymous(request_from("192.0.2.1"))
    with pytest.raises(RateLimited) as caught:
        await limiter.check_address(request_from("192.0.2.1"))
    assert caught.value.retry_after == 40
    assert refused == ["ip"]
    await limiter.check_address(request_from("198.51.100.1"))  # another address is not


async def test_anonymous_work_beyond_the_limit_is_refused_as_ip(clock: Clock) -> None:
    limiter, refused = limiter_with(clock, per_ip=RateLimit(1, 60))
    await limiter.count_anonymous(request_from("192.0.2.1"))
    with pytest.raises(RateLimited):
        await limiter.count_anonymous(request_from("192.0.2.1"))
    assert refused == ["ip"]


async def test_login_starts_beyond_the_limit_are_refused_as_login(clock: Clock) -> None:
    limiter, refused = limiter_with(clock, login_per_ip=RateLimit(1, 60))
    await limiter.check_login(request_from("192.0.2.1"))
    with pytest.raises(RateLimited):
        await limiter.check_login(request_from("192.0.2.1"))
    assert refused == ["login"]


def test_new_chains_beyond_the_limit_are_refused_as_chain(clock: Clock) -> None:
    limiter, refused = limiter_with(
        clock, per_session=RateLimit(0, 60), new_chains_per_session=RateLimit(1, 60)
    )
    record = a_record()
    limiter.count_session(record, first=True)
    with pytest.raises(RateLimited):
        limiter.count_session(record, first=True)
    assert refused == ["chain"]


def test_retry_after_is_one_second_in_the_last_second_of_a_window(clock: Clock) -> None:
    limiter, _ = limiter_with(clock, per_session=RateLimit(1, 60))
    clock.now = 1_800_000_000.0 // 60 * 60 + 59.5
    record = a_record()
    limiter.count_session(record, first=False)
    with pytest.raises(RateLimited) as caught:
        limiter.count_session(record, first=False)
    assert caught.value.retry_after == 1


async def test_upstream_logins_are_spent_per_avatar_within_one_second_windows(
    clock: Clock,
) -> None:
    # A one-second window: the counter must outlive it (a TTL of window - 1 would be 0).
    limiter, refused = limiter_with(clock, upstream_logins_per_avatar=RateLimit(1, 1))
    first, second = (
        cast(Any, SimpleNamespace(name="first")),
        cast(Any, SimpleNamespace(name="second")),
    )
    await limiter.spend_upstream_login(first)
    await limiter.spend_upstream_login(second)
    with pytest.raises(UpstreamBusy):
        await limiter.spend_upstream_login(first)
    assert refused == ["upstream"]


async def test_new_sessions_beyond_the_limit_are_refused_as_user(clock: Clock) -> None:
    limiter, refused = limiter_with(clock, new_sessions_per_user=RateLimit(1, 60))
    await limiter.check_new_session("alice")
    with pytest.raises(RateLimited):
        await limiter.check_new_session("alice")
    assert refused == ["user"]


async def test_login_starts_in_one_second_windows_are_counted(clock: Clock) -> None:
    # The counter must outlive its one-second window (a TTL of window - 1 would be 0).
    limiter, _ = limiter_with(clock, login_per_ip=RateLimit(1, 1))
    await limiter.check_login(request_from("192.0.2.1"))
    with pytest.raises(RateLimited):
        await limiter.check_login(request_from("192.0.2.1"))


async def test_an_address_has_a_budget_per_scope(clock: Clock) -> None:
    limiter, _ = limiter_with(clock, per_ip=RateLimit(1, 60), login_per_ip=RateLimit(1, 60))
    await limiter.count_anonymous(request_from("192.0.2.1"))
    await limiter.check_login(request_from("192.0.2.1"))  # anonymous work spent no login


async def test_login_starts_are_counted_per_address(clock: Clock) -> None:
    limiter, _ = limiter_with(clock, login_per_ip=RateLimit(1, 60))
    await limiter.check_login(request_from("192.0.2.1"))
    await limiter.check_login(request_from("198.51.100.1"))
