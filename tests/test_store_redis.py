"""RedisStore against a real redis-server: each operation, TTLs, the leased lock, failures."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import ConfigError, StoreUnavailable
from bridge.secret import Secret
from bridge.settings import report as config_report
from bridge.settings.schema import StoreSettings
from bridge.store import open_store
from bridge.store.redis import RedisStore, parse_url
from support.config import make_settings
from support.redis import RedisServer, redis_server, tls_files  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

TIMEOUT = 0.3


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:  # noqa: F811
    store = RedisStore(parse_url(redis_server.url), prefix="t", timeout=TIMEOUT, lease=0.3)
    yield store
    await store.close()


@pytest.fixture
async def make_store(
    redis_server: RedisServer,  # noqa: F811
) -> AsyncIterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []

    def factory(**kwargs: Any) -> RedisStore:
        kwargs.setdefault("prefix", "t")
        kwargs.setdefault("timeout", TIMEOUT)
        made.append(RedisStore(parse_url(redis_server.url), **kwargs))
        return made[-1]

    yield factory
    for store in made:
        await store.close()


async def pttl(store: RedisStore, key: str) -> int:
    return int(await store.client.pttl(key))


# --- the URL ---------------------------------------------------------------------------------


def test_url_with_password_user_db_and_tls() -> None:
    address = parse_url("rediss://bridge:p%40ss@redis.internal:6380/3?ssl_ca_certs=/etc/ca.pem")
    assert (address.host, address.port, address.db) == ("redis.internal", 6380, 3)
    assert address.username == "bridge" and address.password == Secret("p@ss")
    assert address.tls and address.ca_certs == "/etc/ca.pem"


def test_url_defaults() -> None:
    address = parse_url("redis://127.0.0.1")
    assert (address.port, address.db, address.password, address.tls) == (6379, 0, None, False)


def test_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    address = parse_url("redis+sentinel://bridge:p%40ss@s1:26380,s2,[::1]:26381/mymaster/2")
    assert address.topology == "sentinel" and address.service == "mymaster"
    assert address.nodes == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert address.db == 2 and address.username == "bridge" and address.password == Secret("p@ss")
    assert not address.tls
    tls = parse_url("rediss+sentinel://s1/mymaster?ssl_ca_certs=/etc/ca.pem")
    assert tls.tls and tls.ca_certs == "/etc/ca.pem" and tls.db == 0


def test_cluster_url_names_the_nodes_to_start_from() -> None:
    address = parse_url("rediss+cluster://:pw@n1:7000,n2:7001,n3")
    assert address.topology == "cluster" and address.tls
    assert address.nodes == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert address.password == Secret("pw") and address.username is None
    assert parse_url("redis+cluster://n1/0").db == 0


@pytest.mark.parametrize(
    "url",
    [
        "redis://",
        "redis://host:notaport/0",
        "redis://host/zero",
        "redis://host/0?ssl_cert_reqs=none",
        "redis://host/0?ssl_ca_certs=/ca.pem",
        "http://host/0",
        "redis://a:6379,b:6379/0",
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1:26379/mymaster/zero",
        "redis+sentinel://s1:26379/mymaster/0/extra",
        "redis+sentinel://s1:notaport/mymaster",
        "redis+cluster://n1:7000/1",
        "redis+cluster://n1:7000,/0",
        "redis+cluster://n1:7000?ssl_ca_certs=/ca.pem",
        "redis+cluster://n1:70000",
    ],
)
def test_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^store\.url"):
        parse_url(url)


def test_bad_redis_url_stops_start_up() -> None:
    with pytest.raises(ConfigError, match=r"^store\.url"):
        make_settings({"store": {"url": "redis://host/zero"}})


def test_lock_lease_must_outlast_three_store_timeouts() -> None:
    redis = {"url": "redis://127.0.0.1:6379/0", "timeout": 2.0}
    with pytest.raises(ConfigError, match=r"^store\.lock_lease"):
        make_settings({"store": {**redis, "lock_lease": 5.0}})
    assert make_settings({"store": {**redis, "lock_lease": 6.0}}).store.lock_lease == 6.0
    # The memory store's lock is in-process: no lease to outlast anything.
    assert make_settings({"store": {"timeout": 5.0}}).store.timeout == 5.0


def test_store_password_is_masked_when_shown() -> None:
    settings = make_settings(env={"BRIDGE_STORE_URL": "redis://:hunter2-store@redis:6379/0"})
    assert config_report.masked(settings)["store"]["url"] == "redis://:********@redis:6379/0"
    assert "hunter2-store" not in repr(config_report.masked(settings))


def test_open_store_routes_redis_urls() -> None:
    store = open_store(StoreSettings(url="redis://127.0.0.1:1/0", prefix="p", timeout=0.5))
    assert isinstance(store, RedisStore) and store.key("a") == "p:a" and store.timeout == 0.5
    for url in ("redis+sentinel://127.0.0.1:1/svc/0", "rediss+cluster://127.0.0.1:1"):
        store = open_store(StoreSettings(url=url, prefix="p"))
        assert isinstance(store, RedisStore) and store.address.topology in url


def test_a_password_in_a_url_of_several_hosts_is_masked_when_shown() -> None:
    url = "redis+sentinel://:hunter2-store@s1:26379,s2:26379/mymaster/0"
    masked = config_report.masked(make_settings(env={"BRIDGE_STORE_URL": url}))["store"]["url"]
    assert masked == "redis+sentinel://:********@s1:26379,s2:26379/mymaster/0"


def test_a_prefix_with_a_hash_tag_is_refused() -> None:
    # It would put every key of every session in one cluster slot.
    with pytest.raises(ConfigError, match=r"^store\.prefix"):
        make_settings({"store": {"prefix": "sbridge{x}"}})


def test_a_sessions_keys_share_its_hash_tag_and_give_back_its_id() -> None:
    store = open_store(StoreSettings(url="redis://127.0.0.1:1/0", prefix="p"))
    assert store.session_key("session", "ab12") == "p:session:{ab12}"
    assert store.session_key("lock", "ab12") == "p:lock:{ab12}"
    assert store.session_of("session", "p:session:{ab12}") == "ab12"
    assert store.session_of("session", "p:lock:{ab12}") is None
    assert store.session_of("session", "p:session:ab12") is None


# --- records -----------------------------------------------------------------------------------


async def test_set_then_get_returns_the_record_with_its_ttl(store: RedisStore) -> None:
    await store.set("t:r", {"a": 1, "b": ["x"]}, 30)
    assert await store.get("t:r") == {"a": 1, "b": ["x"]}
    assert 29_000 < await pttl(store, "t:r") <= 30_000


async def test_get_of_a_missing_key_is_none(store: RedisStore) -> None:
    assert await store.get("t:missing") is None


async def test_get_of_a_foreign_value_is_none(store: RedisStore) -> None:
    await store.client.set("t:junk", b"\xff not json")
    assert await store.get("t:junk") is None


async def test_add_sets_only_an_absent_key(store: RedisStore) -> None:
    assert await store.add("t:k", {"v": 1}, 30) is True
    assert await store.add("t:k", {"v": 2}, 30) is False
    assert await store.get("t:k") == {"v": 1}
    assert await pttl(store, "t:k") > 0


async def test_delete_removes_the_key(store: RedisStore) -> None:
    await store.set("t:k", {"v": 1}, 30)
    await store.delete("t:k")
    assert await store.get("t:k") is None


async def test_incr_counts_and_its_ttl_starts_at_creation(store: RedisStore) -> None:
    assert await store.incr("t:c", 30) == 1
    await store.client.pexpire("t:c", 5_000)  # as if time had passed since creation
    assert await store.incr("t:c", 30) == 2
    assert await pttl(store, "t:c") <= 5_000


async def test_keys_are_namespaced_by_prefix(make_store: Callable[..., RedisStore]) -> None:
    one, two = make_store(prefix="one"), make_store(prefix="two")
    await one.set(one.key("session", "x"), {"who": "one"}, 30)
    assert await two.get(two.key("session", "x")) is None
    assert [k async for k in two.scan(two.key("*"))] == []
    assert [k async for k in one.scan(one.key("*"))] == ["one:session:x"]


# --- sets and lists ---------------------------------------------------------------------------


async def test_set_members_add_and_remove(store: RedisStore) -> None:
    await store.set_add("t:s", "a", 30)
    await store.set_add("t:s", "b", 30)
    await store.set_remove("t:s", "a")
    assert await store.set_members("t:s") == {"b"}
    assert await store.set_members("t:none") == set()


async def test_an_emptied_set_is_gone(store: RedisStore) -> None:
    await store.set_add("t:s", "a", 30)
    await store.set_remove("t:s", "a")
    assert await store.client.exists("t:s") == 0


async def test_set_ttl_only_grows(store: RedisStore) -> None:
    await store.set_add("t:s", "long", 60)
    await store.set_add("t:s", "short", 5)
    assert await pttl(store, "t:s") > 50_000
    await store.set_add("t:s", "longer", 120)
    assert await pttl(store, "t:s") > 110_000


async def test_list_is_capped_newest_first_with_ttl(store: RedisStore) -> None:
    for i in range(7):
        await store.list_push("t:l", {"i": i}, max_len=5, ttl=30)
    assert await store.list_range("t:l", 10) == [{"i": i} for i in (6, 5, 4, 3, 2)]
    assert await store.list_range("t:l", 2) == [{"i": 6}, {"i": 5}]
    assert await store.list_range("t:l", 0) == []
    assert await store.client.llen("t:l") == 5
    assert 0 < await pttl(store, "t:l") <= 30_000


async def test_scan_yields_matching_keys_only(store: RedisStore) -> None:
    for i in range(1200):  # more than one SCAN page
        await store.client.set(f"t:session:{i}", b"{}", px=30_000)
    await store.set("t:user:alice", {}, 30)
    found = [k async for k in store.scan("t:session:*")]
    assert len(found) == len(set(found)) == 1200


async def test_ping(store: RedisStore) -> None:
    assert await store.ping() is True


# --- the lock ---------------------------------------------------------------------------------


async def test_lock_is_exclusive_across_stores(make_store: Callable[..., RedisStore]) -> None:
    a, b = make_store(lease=5), make_store(lease=5)
    async with a.lock("t:lock:x", wait=1):
        with pytest.raises(StoreUnavailable, match="busy"):
            async with b.lock("t:lock:x", wait=0.1):
                pass
    async with b.lock("t:lock:x", wait=0.1):
        pass


async def test_holder_longer_than_the_lease_keeps_the_lock(
    make_store: Callable[..., RedisStore],
) -> None:
    holder, other = make_store(lease=0.2), make_store(lease=0.2)
    took_it = False

    async def contend() -> None:
        nonlocal took_it
        try:
            async with other.lock("t:lock:x", wait=0.6):
                took_it = True
        except StoreUnavailable:
            pass

    async with holder.lock("t:lock:x", wait=1):
        token = await holder.client.get("t:lock:x")
        await contend()  # waits three leases' worth while the holder works
        assert await holder.client.get("t:lock:x") == token
    assert not took_it
    assert await holder.client.exists("t:lock:x") == 0


async def test_waiter_gets_the_lock_when_it_is_released(
    make_store: Callable[..., RedisStore],
) -> None:
    a, b = make_store(lease=5), make_store(lease=5)
    order: list[str] = []

    async def waiter() -> None:
        async with b.lock("t:lock:x", wait=5):
            order.append("b")

    async with a.lock("t:lock:x", wait=1):
        task = asyncio.create_task(waiter())
        for _ in range(500):  # until the waiter was refused and counted itself in
            if await a.client.get("t:lock:x:waiters"):
                break
            await asyncio.sleep(0.01)
        order.append("a")
    started = time.monotonic()
    await task
    assert order == ["a", "b"]
    assert time.monotonic() - started < 0.5  # released, not lapsed (the lease is 5 s)


async def test_lock_is_released_when_the_holder_raises(store: RedisStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.lock("t:lock:x", wait=1):
            raise RuntimeError("boom")
    assert await store.client.exists("t:lock:x") == 0


async def test_a_dead_holders_lease_lapses(store: RedisStore) -> None:
    await store.client.set("t:lock:x", "someone-who-crashed", px=200)
    async with store.lock("t:lock:x", wait=2):
        assert await store.client.get("t:lock:x") != b"someone-who-crashed"


async def test_release_never_deletes_another_holders_lock(store: RedisStore) -> None:
    async with store.lock("t:lock:x", wait=1):
        # As if our lease had lapsed and another instance had taken the lock.
        await store.client.set("t:lock:x", "other-holder", px=10_000)
    assert await store.client.get("t:lock:x") == b"other-holder"


async def test_lock_gives_one_flight_across_instances(
    make_store: Callable[..., RedisStore],
) -> None:
    instances = [make_store(lease=1), make_store(lease=1)]
    fetches = 0

    async def request(store: RedisStore) -> dict[str, Any]:
        nonlocal fetches
        async with store.lock("t:lock:s", wait=5):
            record = await store.get("t:record")  # re-read once the lock is held
            if record is None:
                fetches += 1
                await asyncio.sleep(0.05)  # the upstream call
                record = {"tokens": "sealed"}
                await store.set("t:record", record, 30)
            return record

    answers = await asyncio.gather(*(request(instances[i % 2]) for i in range(20)))
    assert fetches == 1 and all(a == {"tokens": "sealed"} for a in answers)


# --- failures and recovery --------------------------------------------------------------------


async def _every_operation(store: RedisStore) -> list[Callable[[], Any]]:
    async def scan() -> None:
        async for _ in store.scan("t:*"):
            pass

    async def lock() -> None:
        async with store.lock("t:lock:x", wait=30):
            pass

    async def fenced_write() -> None:
        async with store.lock("t:lock:{r}", wait=30) as lease:
            await store.put_record("t:rec:{r}", b"{}", 30, tombstone="t:end:{r}", fence=lease)
            await store.swap_record("t:rec:{r}", b"{}", b"{}", 30, fence=lease)

    async def waited_lock() -> None:
        # A second holder waits for the first one's release (BLPOP on the lock's wake list).
        async with store.lock("t:lock:{w}", wait=30):
            waiter = asyncio.ensure_future(_hold(store, "t:lock:{w}"))
            await asyncio.sleep(0.05)  # the waiter counts itself in and blocks meanwhile
        await waiter

    return [
        lambda: store.get("t:k"),
        lambda: store.get_record("t:rec:{r}"),
        lambda: store.put_record("t:rec:{r}", b"{}", 30, tombstone="t:end:{r}", create=True),
        lambda: store.swap_record("t:rec:{r}", b"{}", b"{}", 30),
        fenced_write,
        lambda: store.end_record("t:rec:{r}", "t:end:{r}", 30),
        lambda: store.counter("t:c"),
        lambda: store.set("t:k", {}, 30),
        lambda: store.add("t:k", {}, 30),
        lambda: store.delete("t:k"),
        lambda: store.incr("t:c", 30),
        lambda: store.set_add("t:s", "m", 30),
        lambda: store.set_remove("t:s", "m"),
        lambda: store.set_members("t:s"),
        lambda: store.list_push("t:l", {}, 5, 30),
        lambda: store.list_range("t:l", 5),
        scan,
        lock,
        waited_lock,
    ]


async def _hold(store: RedisStore, name: str) -> None:
    async with store.lock(name, wait=30):
        pass


async def test_redis_down_makes_every_operation_store_unavailable(
    store: RedisStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    await store.set("t:k", {}, 30)  # the pool holds a live connection when Redis goes
    redis_server.stop()
    for operation in await _every_operation(store):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await operation()
        assert time.monotonic() - started < TIMEOUT + 0.5
    assert await store.ping() is False


async def test_hung_redis_times_out_as_store_unavailable(
    store: RedisStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    await store.set("t:kept", {"v": 1}, 30)
    redis_server.pause()
    try:
        for operation in await _every_operation(store):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await operation()
            assert time.monotonic() - started < TIMEOUT + 0.5
        assert await store.ping() is False
    finally:
        redis_server.resume()
    # The answers the frozen server owed must not be read as answers to later calls.
    await store.set("t:other", {"v": 2}, 30)
    assert await store.get("t:kept") == {"v": 1}
    assert await store.get("t:other") == {"v": 2}


async def test_store_recovers_when_redis_comes_back(
    store: RedisStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    await store.set("t:k", {"v": 1}, 30)
    redis_server.stop()
    with pytest.raises(StoreUnavailable):
        await store.get("t:k")
    redis_server.start()
    assert await store.ping() is True
    await store.set("t:k", {"v": 2}, 30)
    assert await store.get("t:k") == {"v": 2}
    assert await store.incr("t:c", 30) == 1  # the scripts are loaded again after the restart


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    store: RedisStore,
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.store")
    redis_server.stop()
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await store.get("t:k")
    redis_server.start()
    await store.get("t:k")
    await store.get("t:k")
    messages = [r.getMessage() for r in caplog.records if r.name == "bridge.store"]
    assert messages == ["redis unavailable", "redis available again"]


async def test_lock_fails_fast_when_redis_is_down(
    store: RedisStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    redis_server.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        async with store.lock("t:lock:x", wait=30):
            pass
    assert "busy" not in str(caught.value)
    assert time.monotonic() - started < TIMEOUT + 0.5


async def test_holder_survives_redis_outage_and_releases(
    store: RedisStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    with pytest.raises(StoreUnavailable):
        async with store.lock("t:lock:x", wait=1):
            redis_server.stop()
            await store.get("t:k")
    redis_server.start()
    async with store.lock("t:lock:x", wait=1):
        pass


# The README's ACL for the bridge's Redis user: these commands, on the prefix's keys only.
ACL_RULES = (
    "on >acl-pass ~t:* resetchannels -@all +get +set +del +incr +pttl +pexpire +sadd"
    " +srem +smembers +rpush +ltrim +lrange +scan +evalsha +script|load +ping +exists +blpop +decr"
)


async def test_every_operation_works_under_the_documented_acl(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    with redis_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "bridge", *ACL_RULES.split())
    url = f"redis://bridge:acl-pass@127.0.0.1:{redis_server.port}/0"
    store = RedisStore(parse_url(url), prefix="t", timeout=2, lease=0.3)
    try:
        for operation in await _every_operation(store):
            await operation()
        assert await store.ping() is True
        with pytest.raises(StoreUnavailable):  # and nothing outside the prefix
            await store.get("other:k")
    finally:
        await store.close()


# --- TLS and a password -----------------------------------------------------------------------


@pytest.fixture
def tls_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path, password="s3cret-pass", tls=tls_files(tmp_path)).start()
    yield server
    server.stop()


async def test_tls_with_password_works(tls_redis: RedisServer) -> None:
    store = RedisStore(parse_url(tls_redis.url), timeout=2)
    try:
        await store.set("t:k", {"v": 1}, 30)
        assert await store.get("t:k") == {"v": 1}
        # The hot path's own connection (bridge.store.pipe) speaks TLS too.
        assert await store.put_record("t:r:{a}", b"v", 30, tombstone="t:e:{a}", create=True)
        assert await store.swap_record("t:r:{a}", b"v", b"w", 30) is True
        assert await store.get_record("t:r:{a}") == b"w"
    finally:
        await store.close()


async def test_wrong_password_is_store_unavailable(tls_redis: RedisServer) -> None:
    url = tls_redis.url.replace("s3cret-pass", "wrong")
    store = RedisStore(parse_url(url), timeout=2)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.get("t:k")
        assert "wrong" not in str(caught.value)
        assert await store.ping() is False
    finally:
        await store.close()


def _other_ca(server: RedisServer, directory: Path) -> str:
    other = directory / "other"
    other.mkdir()
    return server.url.replace(server.tls["ca"], tls_files(other)["ca"])


@pytest.mark.parametrize(
    "url_of",
    [
        pytest.param(_other_ca, id="unknown certificate authority"),
        # The certificate names 127.0.0.1, not localhost.
        pytest.param(lambda s, _: s.url.replace("127.0.0.1", "localhost"), id="wrong host name"),
        pytest.param(lambda s, _: f"redis://127.0.0.1:{s.port}/0", id="plain to a TLS port"),
    ],
)
async def test_a_refused_tls_connection_is_store_unavailable_on_both_clients(
    tls_redis: RedisServer, tmp_path: Path, url_of: Callable[[RedisServer, Path], str]
) -> None:
    store = RedisStore(parse_url(url_of(tls_redis, tmp_path)), timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("t:k")  # redis-py
        with pytest.raises(StoreUnavailable):
            await store.get_record("t:r:{a}")  # the hot path's pipe
    finally:
        await store.close()
