"""Session record writes on both stores: a tombstone, a vanished record or a lost lease each
refuse the write, atomically with it; a Redis lock holder stalled past its lease writes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.errors import LeaseLost
from bridge.sessions.manager import (
    ProviderSession,
    SessionExtra,
    SessionRecord,
    decode_record,
    encode_record,
)
from bridge.store.base import Changed, Store
from bridge.store.memory import MemoryStore
from bridge.store.redis import RedisStore, parse_url
from support.redis import RedisServer, redis_server  # noqa: F401 - fixture

RECORD, TOMB, LOCK = "t:session:s1", "t:ended:s1", "t:lock:s1"


@pytest.fixture(params=["memory", "redis", "redis-scripts-only"])
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(prefix="t")
        return
    server = RedisServer(tmp_path).start()
    redis = RedisStore(parse_url(server.url), prefix="t", timeout=1.0, lease=5.0)
    if request.param == "redis-scripts-only":
        # As on a cluster, which has no pipelined connection: the writes go through redis-py.
        assert redis._pipe is not None
        await redis._pipe.close()
        redis._pipe = None
    try:
        yield redis
    finally:
        await redis.close()
        server.stop()


async def test_an_oidc_session_record_reads_back_typed(store: Store) -> None:
    link = ProviderSession(provider="corp", iss="https://id.example.com", sub="u1", sid="s")
    record = SessionRecord(
        id="s1", subject="corp:u1", method="oidc", claims={}, created_at=1.0, last_seen=1.0,
        expires_at=2.0, extra=SessionExtra(oidc=link),
    )  # fmt: skip
    assert await store.put_record(RECORD, encode_record(record), 30, tombstone=TOMB, create=True)
    raw = await store.get_record(RECORD)
    assert raw is not None
    loaded = decode_record(raw)
    assert loaded is not None and loaded.extra.oidc == link


async def test_create_writes_once_and_never_overwrites(store: Store) -> None:
    assert await store.put_record(RECORD, b"1", 30, tombstone=TOMB, create=True)
    assert not await store.put_record(RECORD, b"2", 30, tombstone=TOMB, create=True)
    assert await store.get_record(RECORD) == b"1"


async def test_an_update_needs_the_record_to_still_exist(store: Store) -> None:
    assert not await store.put_record(RECORD, b"1", 30, tombstone=TOMB)
    assert await store.get_record(RECORD) is None
    await store.put_record(RECORD, b"1", 30, tombstone=TOMB, create=True)
    assert await store.put_record(RECORD, b"2", 30, tombstone=TOMB)
    assert await store.get_record(RECORD) == b"2"


async def test_an_ended_record_is_never_written_back(store: Store) -> None:
    await store.put_record(RECORD, b"1", 30, tombstone=TOMB, create=True)
    assert await store.end_record(RECORD, TOMB, 30) is True
    assert await store.end_record(RECORD, TOMB, 30) is False  # ended once, not twice
    assert not await store.put_record(RECORD, b"2", 30, tombstone=TOMB)
    assert not await store.put_record(RECORD, b"3", 30, tombstone=TOMB, create=True)
    assert await store.get_record(RECORD) is None


async def test_a_swap_after_the_session_ended_writes_nothing(store: Store) -> None:
    # A request read the record, then the session ended before its write: the write finds no
    # record (ending deletes it as it leaves the tombstone), so it writes nothing, then or later.
    await store.put_record(RECORD, b"read", 30, tombstone=TOMB, create=True)
    assert await store.end_record(RECORD, TOMB, 30) is True
    assert await store.swap_record(RECORD, b"read", b"late", 30) is False
    assert not await store.put_record(RECORD, b"late", 30, tombstone=TOMB, create=True)
    assert await store.get_record(RECORD) is None


async def test_a_swap_of_a_vanished_record_writes_nothing(store: Store) -> None:
    assert await store.swap_record(RECORD, b"1", b"2", 30) is False
    assert await store.get_record(RECORD) is None


async def test_a_swap_from_a_stale_read_writes_nothing_and_returns_what_is_stored(
    store: Store,
) -> None:
    await store.put_record(RECORD, b"new", 30, tombstone=TOMB, create=True)
    outcome = await store.swap_record(RECORD, b"old", b"mine", 30)
    assert isinstance(outcome, Changed) and outcome.current == b"new"
    assert await store.get_record(RECORD) == b"new"


async def test_a_swap_from_an_equal_read_writes(store: Store) -> None:
    await store.put_record(RECORD, b"1", 30, tombstone=TOMB, create=True)
    read = bytes(bytearray(b"1"))  # equal, not the stored object itself
    assert await store.swap_record(RECORD, read, b"2", 30) is True
    assert await store.get_record(RECORD) == b"2"


async def test_a_write_fenced_by_a_held_lease_goes_through(store: Store) -> None:
    await store.put_record(RECORD, b"1", 30, tombstone=TOMB, create=True)
    async with store.lock(LOCK, wait=1) as lease:
        assert await store.put_record(RECORD, b"2", 30, tombstone=TOMB, fence=lease)
    with pytest.raises(LeaseLost):  # released: the lease fences nothing any more
        await store.put_record(RECORD, b"3", 30, tombstone=TOMB, fence=lease)
    assert await store.get_record(RECORD) == b"2"


async def test_a_swap_fenced_by_a_released_lease_writes_nothing(store: Store) -> None:
    """The hot path's write (swap_record) is fenced like put_record: it is what the broker
    writes after a Sentifyd call made under the lock."""
    await store.put_record(RECORD, b"1", 30, tombstone=TOMB, create=True)
    async with store.lock(LOCK, wait=1) as lease:
        assert await store.swap_record(RECORD, b"1", b"2", 30, fence=lease) is True
    with pytest.raises(LeaseLost):
        await store.swap_record(RECORD, b"2", b"3", 30, fence=lease)
    async with store.lock(LOCK, wait=1):  # another holder now: the old lease still fences
        with pytest.raises(LeaseLost):
            await store.swap_record(RECORD, b"2", b"4", 30, fence=lease)
    assert await store.get_record(RECORD) == b"2"


async def test_a_holder_stalled_past_its_lease_writes_nothing(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    lease_s = 0.5
    stalled = RedisStore(parse_url(redis_server.url), prefix="t", timeout=0.2, lease=lease_s)
    other = RedisStore(parse_url(redis_server.url), prefix="t", timeout=0.2, lease=lease_s)
    try:
        await stalled.put_record(RECORD, b"1", 30, tombstone=TOMB, create=True)
        async with stalled.lock(LOCK, wait=1) as old:

            def stall() -> None:
                # Redis frozen past the lease: the holder cannot renew it, and when Redis runs
                # again the lease has lapsed by Redis's own clock.
                redis_server.pause()
                time.sleep(lease_s * 3)
                redis_server.resume()

            await asyncio.to_thread(stall)
            async with other.lock(LOCK, wait=2) as new:
                assert await other.put_record(RECORD, b"2", 30, tombstone=TOMB, fence=new)
                with pytest.raises(LeaseLost):
                    await stalled.put_record(RECORD, b"stale", 30, tombstone=TOMB, fence=old)
                with pytest.raises(LeaseLost):  # the hot path's write, fenced the same way
                    await stalled.swap_record(RECORD, b"2", b"stale", 30, fence=old)
                assert await other.get_record(RECORD) == b"2"
                assert await other.client.get(LOCK) == new.token.encode()
        assert await other.get_record(RECORD) == b"2"  # nothing the stalled holder did stuck
    finally:
        await stalled.close()
        await other.close()


async def test_a_lock_waiter_with_under_a_second_to_wait_still_gets_a_lock_released_meanwhile(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    store = RedisStore(parse_url(redis_server.url), prefix="t", timeout=1.0, lease=5.0)
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with store.lock(LOCK, wait=1):
            held.set()
            await release.wait()

    try:
        holding = asyncio.create_task(holder())
        await held.wait()
        waiting = asyncio.create_task(_take(store, wait=0.9))
        # The waiter's first try has failed once it counts in as the lock's waiter.
        while not await store.client.get(LOCK + ":waiters"):  # noqa: ASYNC110 - in Redis
            await asyncio.sleep(0.01)
        release.set()
        await holding
        assert await waiting
    finally:
        await store.close()


async def _take(store: RedisStore, *, wait: float) -> bool:
    async with store.lock(LOCK, wait=wait):
        return True


async def test_a_holder_renews_its_lease_again_after_a_renewal_failed(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # The renewal after the failed one comes 0.7 s before the lease would lapse: room for a
    # busy machine (with a 1.5 s lease the margin was 0.2 s, and a loaded run lost it).
    lease_s = 3.0
    store = RedisStore(parse_url(redis_server.url), prefix="t", timeout=0.3, lease=lease_s)
    try:
        async with store.lock(LOCK, wait=1) as lease:

            def stall() -> None:
                # Redis frozen across the first renewal (at a third of the lease): it times out.
                redis_server.pause()
                time.sleep(2.0)
                redis_server.resume()

            await asyncio.to_thread(stall)
            await asyncio.sleep(4.4)  # the holder works on, past any lease it got before
            assert await store.client.get(LOCK) == lease.token.encode()
    finally:
        await store.close()


async def test_a_set_answers_as_a_set_as_it_grows_past_and_shrinks_below_its_small_form(
    store: Store,
) -> None:
    # The memory store keeps a small set (a user's sessions) as a tuple, a larger one as a set:
    # the answers must not tell the two apart, across the boundary both ways.
    model: set[str] = set()
    steps = [("add", f"s{n}") for n in range(12)] + [("add", "s3"), ("add", "s0")]
    steps += [("remove", f"s{n}") for n in range(0, 12, 2)] + [("remove", "absent")]
    steps += [("add", "s0"), ("add", "s0")] + [("remove", f"s{n}") for n in range(12)]
    for action, member in steps:
        if action == "add":
            await store.set_add("t:user:u", member, 30)
            model.add(member)
        else:
            await store.set_remove("t:user:u", member)
            model.discard(member)
        assert await store.set_members("t:user:u") == model, (action, member)
    assert model == set()
    await store.set_add("t:user:u", "again", 30)
    assert await store.set_members("t:user:u") == {"again"}
