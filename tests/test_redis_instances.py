"""Two ``sentifyd-bridge serve`` processes on one real Redis, with the stand-in Sentifyd live.

Each test starts its own Redis and two bridge processes (A and B) that share it, as two machines
behind a load balancer would; the visitor's requests are split between them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.sessions.manager import SessionManager
from support.config import API_KEY, AVATAR_ID, BRIDGE_KEY
from support.live import LiveServer
from support.redis import (
    BridgeProcess,
    Load,
    RedisServer,
    Visitor,
    new_cookie,
    start_all,
    stop_all,
)

pytestmark = pytest.mark.integration

PREFIX = "sbx"
STORE_TIMEOUT = 0.5
CLIENT_TIMEOUT = 8.0  # far above any answer the bridge owes; a hang would exceed it


@dataclass
class Cluster:
    redis: RedisServer
    a: BridgeProcess
    b: BridgeProcess
    fake: Any  # the stand-in's state: login_calls, issued tokens

    @property
    def bridges(self) -> tuple[BridgeProcess, BridgeProcess]:
        return self.a, self.b

    def restart_bridges(self) -> None:
        stop_all(self.bridges)
        start_all(self.bridges)


@pytest.fixture
def cluster_factory(tmp_path: Path, live_fake: LiveServer) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def start(*, appendonly: bool = False, **config: Any) -> Cluster:
        redis = RedisServer(tmp_path, appendonly=appendonly).start()
        values = {
            "store_url": redis.url,
            "prefix": PREFIX,
            "store_timeout": STORE_TIMEOUT,
            "lock_wait": 3.0,
            "lock_lease": 2.0,
            "backend": live_fake.url,
            "avatar_id": AVATAR_ID,
            **config,
        }
        a = BridgeProcess(tmp_path, "a", **values)
        b = BridgeProcess(tmp_path, "b", **values)
        cluster = Cluster(redis, a, b, live_fake.app.extensions["fake_sentifyd"])
        made.append(cluster)
        start_all(cluster.bridges)
        return cluster

    yield start
    for cluster in made:
        stop_all(cluster.bridges)
        cluster.redis.stop()


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
        yield client


# --- shared sessions --------------------------------------------------------------------------


async def test_session_made_through_a_works_through_b(
    cluster_factory: Callable[..., Cluster], http: httpx.AsyncClient
) -> None:
    cluster = cluster_factory()
    alice = Visitor("alice")
    first = await alice.tokens(http, cluster.a)
    assert first.status_code == 200 and alice.session

    through_b = await alice.tokens(http, cluster.b)
    assert through_b.status_code == 200
    assert not new_cookie(through_b)  # the same session, not a new one
    # B opened the tokens A sealed: no second upstream call.
    assert through_b.json()["tokens"]["accessToken"] == first.json()["tokens"]["accessToken"]
    assert cluster.fake.login_calls == 1

    refreshed = await alice.tokens(http, cluster.a, alice.handles[-1])
    assert refreshed.status_code == 200 and cluster.fake.login_calls == 1


async def test_rotated_handle_replayed_through_b_is_refused(
    cluster_factory: Callable[..., Cluster], http: httpx.AsyncClient
) -> None:
    cluster = cluster_factory(refresh_grace=0)
    alice = Visitor("alice")
    assert (await alice.tokens(http, cluster.a)).status_code == 200
    old = alice.handles[-1]
    assert (await alice.tokens(http, cluster.a, old)).status_code == 200
    current = alice.handles[-1]

    replay = await alice.tokens(http, cluster.b, old)
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_refresh_token"
    # Treated as theft: the whole session ended, on every instance.
    after = await alice.tokens(http, cluster.a, current)
    assert after.status_code == 401
    events = [json.loads(e) for e in cluster.redis.client().lrange(f"{PREFIX}:events:alice", 0, -1)]
    assert [e["event"] for e in events][-2:] == ["refresh_handle_reused", "session_ended"]


async def test_concurrent_requests_across_instances_make_one_upstream_call(
    cluster_factory: Callable[..., Cluster], http: httpx.AsyncClient
) -> None:
    cluster = cluster_factory(lock_wait=10.0)
    alice = Visitor("alice")
    assert (await alice.tokens(http, cluster.a)).status_code == 200
    assert cluster.fake.login_calls == 1
    # As if the session's Sentifyd tokens had expired: drop them from the record.
    assert alice.session
    key = f"{PREFIX}:session:{{{SessionManager.session_id(alice.session)}}}"
    with cluster.redis.client() as client:
        record = json.loads(client.get(key))
        record.pop("sealed", None)
        client.set(key, json.dumps(record), keepttl=True)
    cluster.fake.latency = 0.3  # every request arrives while the one upstream call runs

    answers = await asyncio.gather(*(alice.tokens(http, cluster.bridges[i % 2]) for i in range(20)))
    assert [r.status_code for r in answers] == [200] * 20
    assert cluster.fake.login_calls == 2
    assert len({r.json()["tokens"]["accessToken"] for r in answers}) == 1


# --- restarts -----------------------------------------------------------------------------------


async def _sign_in(http: httpx.AsyncClient, cluster: Cluster, n: int) -> list[Visitor]:
    visitors = [Visitor(f"user{i}") for i in range(n)]
    for i, visitor in enumerate(visitors):
        assert (await visitor.tokens(http, cluster.bridges[i % 2])).status_code == 200
    return visitors


async def _still_signed_in(
    http: httpx.AsyncClient, cluster: Cluster, visitors: list[Visitor], logins: int
) -> None:
    for i, visitor in enumerate(visitors):
        handle = visitor.handles[-1]
        refreshed = await visitor.tokens(http, cluster.bridges[(i + 1) % 2], handle)
        assert refreshed.status_code == 200, refreshed.text
        assert not new_cookie(refreshed)
        again = await visitor.tokens(http, cluster.bridges[i % 2])
        assert again.status_code == 200 and not new_cookie(again)
    assert cluster.fake.login_calls == logins  # the sealed tokens were still there to reuse


async def test_sessions_survive_restarting_both_bridges(
    cluster_factory: Callable[..., Cluster], http: httpx.AsyncClient
) -> None:
    cluster = cluster_factory()
    visitors = await _sign_in(http, cluster, 4)
    cluster.restart_bridges()
    await _still_signed_in(http, cluster, visitors, logins=4)


async def test_sessions_survive_a_redis_restart_with_persistence(
    cluster_factory: Callable[..., Cluster], http: httpx.AsyncClient
) -> None:
    cluster = cluster_factory(appendonly=True)
    visitors = await _sign_in(http, cluster, 4)
    cluster.redis.restart()
    await _still_signed_in(http, cluster, visitors, logins=4)


async def test_rotating_the_secret_key_keeps_every_session(
    cluster_factory: Callable[..., Cluster], http: httpx.AsyncClient
) -> None:
    cluster = cluster_factory()
    visitors = await _sign_in(http, cluster, 2)
    new_key = "rotated-bridge-secret-key-0123456789abcdef"
    for bridge in cluster.bridges:
        bridge.env["BRIDGE_SECRET_KEY"] = f"{new_key},{BRIDGE_KEY}"
    cluster.restart_bridges()
    # The old key still opens what it sealed: no new upstream call.
    await _still_signed_in(http, cluster, visitors, logins=2)

    for bridge in cluster.bridges:
        bridge.env["BRIDGE_SECRET_KEY"] = new_key
    cluster.restart_bridges()
    for visitor in visitors:
        refreshed = await visitor.tokens(http, cluster.a, visitor.handles[-1])
        assert refreshed.status_code == 200 and not new_cookie(refreshed)
    # Nobody was logged out; each session fetched tokens once more, now sealed under the new key.
    assert cluster.fake.login_calls == 4
    await _still_signed_in(http, cluster, visitors, logins=4)


# --- outages ------------------------------------------------------------------------------------


async def _under_load(
    http: httpx.AsyncClient,
    cluster: Cluster,
    outage: Callable[[], None],
    recovery: Callable[[], None],
) -> Load:
    visitors = await _sign_in(http, cluster, 6)
    load = Load(http, cluster.bridges, visitors)
    workers = [asyncio.create_task(load.run(v, i)) for i, v in enumerate(visitors)]
    try:
        await load.until(lambda: load.count(200) >= 20, 10)
        down = time.monotonic()
        await asyncio.to_thread(outage)
        await load.until(lambda: load.count(503, down) >= 12, 10)
        ready = await http.get(f"{cluster.a.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"] == "unavailable"
        await asyncio.to_thread(recovery)
        back = time.monotonic()
        # Every visitor's session is served again (a lock caught mid-outage lapses first).
        everyone = {v.user for v in visitors}
        await load.until(lambda: load.served(back) == everyone, 15)
        assert (await http.get(f"{cluster.b.url}/readyz")).status_code == 200
    finally:
        load.stopping = True
        await asyncio.gather(*workers)
    return load


def _check(load: Load, cluster: Cluster) -> None:
    assert load.failures == []  # no hung request, no dropped connection
    assert {s for _, s, _, _ in load.statuses} <= {200, 503}  # no 500s
    assert {c for _, s, c, _ in load.statuses if s == 503} == {"store_unavailable"}
    assert load.slowest < 3 * STORE_TIMEOUT + 3.0  # lock_wait is 3 s
    for bridge in cluster.bridges:
        assert bridge.process is not None and bridge.process.poll() is None
        assert "Traceback" not in bridge.log()


async def test_redis_stopped_mid_load_gives_503s_then_service_resumes(
    cluster_factory: Callable[..., Cluster], http: httpx.AsyncClient
) -> None:
    cluster = cluster_factory(appendonly=True)
    logins_before = 0

    def stop() -> None:
        nonlocal logins_before
        logins_before = cluster.fake.login_calls
        cluster.redis.stop()

    load = await _under_load(http, cluster, stop, cluster.redis.start)
    _check(load, cluster)
    # With persistence on, the sessions came back with their tokens: no new logins.
    assert cluster.fake.login_calls == logins_before


async def test_hung_redis_gives_bounded_503s_then_service_resumes(
    cluster_factory: Callable[..., Cluster], http: httpx.AsyncClient
) -> None:
    cluster = cluster_factory()
    load = await _under_load(http, cluster, cluster.redis.pause, cluster.redis.resume)
    _check(load, cluster)


# --- what a Redis dump reveals ------------------------------------------------------------------


async def test_redis_contents_reveal_no_secret_and_every_key_expires(
    cluster_factory: Callable[..., Cluster], http: httpx.AsyncClient
) -> None:
    cluster = cluster_factory()
    alice = Visitor("alice")
    assert (await alice.tokens(http, cluster.a)).status_code == 200
    assert (await alice.tokens(http, cluster.b, alice.handles[-1])).status_code == 200
    assert (await alice.tokens(http, cluster.b)).status_code == 200
    assert alice.session and cluster.fake.issued_refresh_tokens

    dump = cluster.redis.dump()
    raw = repr(dump).encode() + b"".join(
        json.dumps(v["value"], default=repr).encode() for v in dump.values()
    )
    secrets = [
        *cluster.fake.issued_refresh_tokens,
        *cluster.fake.issued_access_tokens,
        API_KEY,
        BRIDGE_KEY,
        alice.session,
        alice.site_cookie,
        *alice.handles,
    ]
    for secret in secrets:
        assert secret.encode() not in raw
    logs = cluster.a.log() + cluster.b.log()
    for secret in secrets:
        assert secret not in logs

    assert dump and all(key.startswith(f"{PREFIX}:") for key in dump)
    assert all(entry["pttl"] > 0 for entry in dump.values()), dump.keys()
    sessions = [v for k, v in dump.items() if k.startswith(f"{PREFIX}:session:")]
    assert sessions and all(v["pttl"] <= 1800_000 for v in sessions)  # the idle timeout
    kinds = {key.split(":")[1] for key in dump}
    assert {"session", "user", "events"} <= kinds
