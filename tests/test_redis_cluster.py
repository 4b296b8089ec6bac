"""Two ``sentifyd-bridge serve`` processes on a Redis Cluster (``redis+cluster://``).

One cluster for the whole module: three masters, each with a replica, made with
``redis-cli --cluster create`` on 127.0.0.1 without persistence. The tests run in file order;
the last two change the cluster (a slot moves, then a master dies), after every test that
needs it whole.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.cluster import ClusterNode, RedisCluster

from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.errors import StoreUnavailable
from bridge.sessions.manager import SessionManager
from bridge.store.redis import RedisStore, parse_url
from support.config import API_KEY, AVATAR_ID, BRIDGE_KEY, write_bridge_toml
from support.live import LiveServer
from support.redis import (
    BridgeProcess,
    ClusterSetup,
    Load,
    Visitor,
    bridge_command,
    new_cookie,
    start_all,
    stop_all,
    store_config,
)

pytestmark = pytest.mark.integration

PREFIX = "sbc"
STORE_TIMEOUT = 0.5
LOCK_WAIT = 5.0
OPERATOR_TOKEN = "operator-token-for-cluster-tests-0123456789"


@pytest.fixture(scope="module")
def fake() -> Iterator[LiveServer]:
    server = LiveServer(create_fake_sentifyd({API_KEY: AVATAR_ID}, token_ttl=60)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    setup = ClusterSetup(tmp_path_factory.mktemp("cluster")).start()
    yield setup
    setup.stop()


@pytest.fixture(scope="module")
def bridges(
    tmp_path_factory: pytest.TempPathFactory, cluster: ClusterSetup, fake: LiveServer
) -> Iterator[tuple[BridgeProcess, BridgeProcess]]:
    directory = tmp_path_factory.mktemp("bridges")
    values = {
        "store_url": cluster.url,
        "prefix": PREFIX,
        "store_timeout": STORE_TIMEOUT,
        "lock_wait": LOCK_WAIT,
        "lock_lease": 2.0,
        "refresh_grace": 0,  # a replayed handle is theft at once
        "backend": fake.url,
        "avatar_id": AVATAR_ID,
    }
    env = {"BRIDGE_ADMIN_TOKEN": OPERATOR_TOKEN, "BRIDGE_METRICS_TOKEN": OPERATOR_TOKEN}
    pair = (
        BridgeProcess(directory, "a", env=env, **values),
        BridgeProcess(directory, "b", env=env, **values),
    )
    start_all(pair)
    yield pair
    stop_all(pair)
    for bridge in pair:
        assert "Traceback" not in bridge.log()


@pytest.fixture
def upstream(fake: LiveServer) -> Any:
    state = fake.app.extensions["fake_sentifyd"]
    yield state
    state.latency = 0.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=8.0) as client:
        yield client


def cluster_client(cluster: ClusterSetup) -> RedisCluster:
    nodes = [ClusterNode("127.0.0.1", n.port) for n in cluster.running()]
    return RedisCluster(startup_nodes=nodes, socket_timeout=2)


def record_key(visitor: Visitor) -> str:
    assert visitor.session
    return f"{PREFIX}:session:{{{SessionManager.session_id(visitor.session)}}}"


async def each_refreshed_through_the_other_bridge(
    http: httpx.AsyncClient, bridges: tuple[BridgeProcess, BridgeProcess], visitors: list[Visitor]
) -> None:
    """Each visitor refreshes through the bridge it did not start on: 200, same cookie.

    That bridge may meet a moved or dead master once more before its slot map follows: a 503
    store_unavailable then, as during the move itself (a two-worker run saw one), but never a
    lost session: 200 with the same cookie within a few tries.
    """
    for i, visitor in enumerate(visitors):
        deadline = time.monotonic() + 10
        while True:
            refreshed = await visitor.tokens(http, bridges[(i + 1) % 2], visitor.handles[-1])
            if refreshed.status_code != 503 or time.monotonic() > deadline:
                break
            assert refreshed.json()["error"] == "store_unavailable"
            await asyncio.sleep(0.2)
        assert refreshed.status_code == 200 and not new_cookie(refreshed)


# --- everything one Redis promises --------------------------------------------------------------


async def test_a_session_made_on_one_bridge_is_used_on_the_other_with_no_upstream_call(
    bridges: tuple[BridgeProcess, BridgeProcess], upstream: Any, http: httpx.AsyncClient
) -> None:
    a, b = bridges
    alice = Visitor("alice")
    first = await alice.tokens(http, a)
    assert first.status_code == 200
    logins = upstream.login_calls
    through_b = await alice.tokens(http, b)
    assert through_b.status_code == 200 and not new_cookie(through_b)
    assert through_b.json()["tokens"]["accessToken"] == first.json()["tokens"]["accessToken"]
    refreshed = await alice.tokens(http, b, alice.handles[-1])
    assert refreshed.status_code == 200 and not new_cookie(refreshed)
    assert upstream.login_calls == logins


async def test_twenty_requests_over_both_bridges_for_an_expired_session_make_one_login(
    cluster: ClusterSetup,
    bridges: tuple[BridgeProcess, BridgeProcess],
    upstream: Any,
    http: httpx.AsyncClient,
) -> None:
    bob = Visitor("bob")
    assert (await bob.tokens(http, bridges[0])).status_code == 200
    # As if the session's Sentifyd tokens had expired: drop them from the record.
    with cluster_client(cluster) as client:
        record = json.loads(client.get(record_key(bob)))
        record.pop("sealed", None)
        client.set(record_key(bob), json.dumps(record), keepttl=True)
    logins = upstream.login_calls
    upstream.latency = 0.3  # every request arrives while the one upstream call runs

    answers = await asyncio.gather(*(bob.tokens(http, bridges[i % 2]) for i in range(20)))
    assert [r.status_code for r in answers] == [200] * 20
    assert upstream.login_calls == logins + 1
    assert len({r.json()["tokens"]["accessToken"] for r in answers}) == 1


async def test_a_replayed_handle_is_detected_across_bridges(
    cluster: ClusterSetup, bridges: tuple[BridgeProcess, BridgeProcess], http: httpx.AsyncClient
) -> None:
    a, b = bridges
    carol = Visitor("carol")
    assert (await carol.tokens(http, a)).status_code == 200
    old = carol.handles[-1]
    assert (await carol.tokens(http, a, old)).status_code == 200
    current = carol.handles[-1]

    replay = await carol.tokens(http, b, old)
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_refresh_token"
    assert (await carol.tokens(http, a, current)).status_code == 401  # the session ended
    with cluster_client(cluster) as client:
        events = [json.loads(e) for e in client.lrange(f"{PREFIX}:events:carol", 0, -1)]
    assert [e["event"] for e in events][-2:] == ["refresh_handle_reused", "session_ended"]


async def test_rate_limits_are_shared_by_both_bridges(
    tmp_path: Path, cluster: ClusterSetup, fake: LiveServer, http: httpx.AsyncClient
) -> None:
    # A day's window: its boundary will not fall inside this test. Per session and for new
    # chains, as this test has always run (its text was once edited with a replace that hit both).
    config = store_config(
        refresh_grace=10, store_url=cluster.url, prefix="sbl", store_timeout=STORE_TIMEOUT,
        lock_wait=LOCK_WAIT, lock_lease=2.0, backend=fake.url, avatar_id=AVATAR_ID,
        limits={"per_session": "5/day", "new_chains_per_session": "5/day"},
    )  # fmt: skip
    path = write_bridge_toml(tmp_path / "limited.toml", **config)
    pair = (
        BridgeProcess(tmp_path, "limited-a", config_path=path),
        BridgeProcess(tmp_path, "limited-b", config_path=path),
    )
    start_all(pair)
    try:
        dave = Visitor("dave")
        assert (await dave.tokens(http, pair[0])).status_code == 200  # no session cookie yet
        answers = [await dave.tokens(http, pair[i % 2]) for i in range(5)]
        assert [r.status_code for r in answers] == [200] * 5  # normal use passes
        for bridge in pair:  # the sixth, on either bridge, is one too many
            refused = await dave.tokens(http, bridge)
            assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    finally:
        stop_all(pair)


async def test_sessions_spread_over_the_masters_and_every_key_on_every_node_expires(
    cluster: ClusterSetup,
    bridges: tuple[BridgeProcess, BridgeProcess],
    upstream: Any,
    http: httpx.AsyncClient,
) -> None:
    visitors = [Visitor(f"spread{i}") for i in range(30)]
    for i, visitor in enumerate(visitors):
        assert (await visitor.tokens(http, bridges[i % 2])).status_code == 200
    await asyncio.to_thread(cluster.wait_replicas_synced)

    holders = {cluster.owner(record_key(v)).port for v in visitors}
    assert len(holders) >= 2
    secrets = [
        *upstream.issued_refresh_tokens,
        *upstream.issued_access_tokens,
        API_KEY,
        BRIDGE_KEY,
        *(v.session for v in visitors if v.session),
        *(v.site_cookie for v in visitors),
        *(h for v in visitors for h in v.handles),
    ]
    seen: set[str] = set()
    for node in cluster.running():  # masters and replicas alike
        dump = node.dump()
        assert all(entry["pttl"] > 0 for entry in dump.values()), node.port
        raw = repr(dump).encode()
        assert not [secret for secret in secrets if secret.encode() in raw]
        seen |= set(dump)
    assert {record_key(v) for v in visitors} <= seen
    assert {f"{PREFIX}:user:{v.user}" for v in visitors} <= seen
    assert {f"{PREFIX}:events:{v.user}" for v in visitors} <= seen


async def test_the_admin_cli_api_and_metrics_see_sessions_on_every_master(
    cluster: ClusterSetup, bridges: tuple[BridgeProcess, BridgeProcess], http: httpx.AsyncClient
) -> None:
    visitors = [Visitor(f"listed{i}") for i in range(12)]
    for i, visitor in enumerate(visitors):
        assert (await visitor.tokens(http, bridges[i % 2])).status_code == 200
    assert len({cluster.owner(record_key(v)).port for v in visitors}) >= 2
    with cluster_client(cluster) as client:
        stored = sum(1 for _ in client.scan_iter(match=f"{PREFIX}:session:*"))

    listed = await asyncio.to_thread(cli, bridges[0], "sessions", "list", "--limit", "500")
    assert {v.user for v in visitors} <= {s["user"] for s in listed["sessions"]}
    assert len(listed["sessions"]) == stored
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    api = await http.get(f"{bridges[1].url}/admin/sessions?limit=500", headers=auth)
    assert api.status_code == 200
    assert {s["id"] for s in api.json()["sessions"]} == {s["id"] for s in listed["sessions"]}
    metrics = (await http.get(f"{bridges[0].url}/metrics", headers=auth)).text
    assert f"sentifyd_bridge_active_sessions {float(stored)}" in metrics
    ended = await asyncio.to_thread(cli, bridges[1], "sessions", "revoke", "listed3")
    assert ended["ended"] == 1
    gone = await visitors[3].tokens(http, bridges[0], visitors[3].handles[-1])
    assert gone.status_code == 401


def cli(bridge: BridgeProcess, *args: str) -> Any:
    done = subprocess.run(
        [*bridge_command(), *args, "--config", str(bridge.config_path)],
        env=bridge.env,
        capture_output=True,
        check=True,
        timeout=30,
    )
    return json.loads(done.stdout)


# The README's ACL for the bridge's Redis user, with what a cluster client needs besides.
CLUSTER_ACL = (
    "on >acl-pass ~acl:* resetchannels -@all +get +set +del +incr +pttl +pexpire +sadd +srem"
    " +smembers +rpush +ltrim +lrange +scan +evalsha +script|load +ping +exists +blpop +decr"
    " +cluster|slots +command"
)


async def test_every_operation_works_under_the_documented_acl_on_every_node(
    cluster: ClusterSetup,
) -> None:
    for node in cluster.running():
        with node.client() as client:
            client.execute_command("ACL", "SETUSER", "bridge", *CLUSTER_ACL.split())
    url = cluster.url.replace("redis+cluster://", "redis+cluster://bridge:acl-pass@")
    store = RedisStore(parse_url(url), prefix="acl", timeout=2, lease=1)
    try:
        keys = [store.session_key("session", f"s{i}") for i in range(12)]
        for key in keys:  # over every master
            assert await store.add(key, {"k": key}, 30)
            await store.set(key, {"k": key}, 30)
            assert await store.get(key) == {"k": key}
        assert await store.incr(store.key("rate", "x"), 30) == 1
        await store.set_add(store.key("user", "u"), "s1", 30)
        await store.set_remove(store.key("user", "u"), "s1")
        assert await store.set_members(store.key("user", "u")) == set()
        await store.list_push(store.key("events", "u"), {"e": 1}, 5, 30)
        assert await store.list_range(store.key("events", "u"), 5) == [{"e": 1}]
        async with store.lock(store.session_key("lock", "s1"), wait=2) as lease:
            assert await store.put_record(
                keys[1], b'{"k":1}', 30, tombstone=store.session_key("ended", "s1"), fence=lease
            )
        assert await store.end_record(keys[1], store.session_key("ended", "s1"), 30)
        await store.set(keys[1], {"k": keys[1]}, 30)
        assert await store.counter(store.key("rate", "x")) == 1
        await store.delete(store.session_key("ended", "s1"))
        assert sorted([k async for k in store.scan("acl:session:*")]) == sorted(keys)
        for key in keys:
            await store.delete(key)
        assert await store.ping() is True
        with pytest.raises(StoreUnavailable):  # and nothing outside the prefix
            await store.get("other:k")
    finally:
        await store.close()


# --- the cluster changing under traffic ---------------------------------------------------------


async def test_a_slot_migrated_during_traffic_loses_nothing(
    cluster: ClusterSetup,
    bridges: tuple[BridgeProcess, BridgeProcess],
    upstream: Any,
    http: httpx.AsyncClient,
) -> None:
    visitors = [Visitor(f"moving{i}") for i in range(4)]
    for i, visitor in enumerate(visitors):
        assert (await visitor.tokens(http, bridges[i % 2])).status_code == 200
    mover = visitors[0]
    source = cluster.owner(record_key(mover))
    target = next(m for m in cluster.masters() if m.port != source.port)
    with source.client() as client:
        slot = int(client.cluster("keyslot", record_key(mover)))
    logins = upstream.login_calls

    load = Load(http, bridges, visitors)
    loop = asyncio.get_running_loop()

    def step() -> None:
        # Let the moving session be served twice more at each stage of the move.
        served = sum(1 for _, s, _, who in load.statuses if s == 200 and who == mover.user)

        def more() -> bool:
            now = sum(1 for _, s, _, who in load.statuses if s == 200 and who == mover.user)
            return now >= served + 2 or load.count(503) > 0

        asyncio.run_coroutine_threadsafe(load.until(more, 10), loop).result()

    workers = [asyncio.create_task(load.run(v, i)) for i, v in enumerate(visitors)]
    try:
        await asyncio.to_thread(cluster.migrate_slot, slot, source, target, step)
        moved = time.monotonic()
        await load.until(lambda: load.served(moved) == {v.user for v in visitors}, 10)
    finally:
        load.stopping = True
        await asyncio.gather(*workers)

    assert load.failures == []
    # A request that meets the slot migrating may get a 503: the session's scripts touch several
    # of its keys, which Redis refuses with TRYAGAIN until they are all on one node. Never a 500,
    # and nothing is lost.
    assert {s for _, s, _, _ in load.statuses} <= {200, 503}
    assert {c for _, s, c, _ in load.statuses if s == 503} <= {"store_unavailable"}
    assert cluster.owner(record_key(mover)).port == target.port
    assert upstream.login_calls == logins
    await each_refreshed_through_the_other_bridge(http, bridges, visitors)


async def test_a_master_failover_is_followed_without_losing_sessions(
    cluster: ClusterSetup,
    bridges: tuple[BridgeProcess, BridgeProcess],
    upstream: Any,
    http: httpx.AsyncClient,
) -> None:
    visitors = [Visitor(f"failover{i}") for i in range(6)]
    for i, visitor in enumerate(visitors):
        assert (await visitor.tokens(http, bridges[i % 2])).status_code == 200
    victim = cluster.owner(record_key(visitors[0]))
    await asyncio.to_thread(cluster.wait_replicas_synced)
    logins = upstream.login_calls

    load = Load(http, bridges, visitors)
    workers = [asyncio.create_task(load.run(v, i)) for i, v in enumerate(visitors)]
    try:
        await load.until(lambda: load.count(200) >= 20, 10)
        down = time.monotonic()
        await asyncio.to_thread(victim.kill)
        await asyncio.to_thread(cluster.wait_failed_over, victim)
        promoted = time.monotonic()
        everyone = {v.user for v in visitors}
        await load.until(lambda: load.served(promoted) == everyone, 30 - (promoted - down))
    finally:
        load.stopping = True
        await asyncio.gather(*workers)

    assert load.failures == []
    assert {s for _, s, _, _ in load.statuses} <= {200, 503}
    assert {c for _, s, c, _ in load.statuses if s == 503} <= {"store_unavailable"}
    assert load.count(503, down) > 0  # the dead master's sessions waited for its replica
    assert load.slowest < 3 * STORE_TIMEOUT + LOCK_WAIT
    assert upstream.login_calls == logins
    assert cluster.owner(record_key(visitors[0])).port != victim.port
    await each_refreshed_through_the_other_bridge(http, bridges, visitors)
