"""The memory store's capped lists (lifecycle events), kept as plain lists to stay small."""

from __future__ import annotations

from bridge.store.memory import MemoryStore


async def test_list_push_keeps_only_the_newest_max_len() -> None:
    store = MemoryStore()
    for i in range(7):
        await store.list_push("events", {"n": i}, max_len=3, ttl=60)
    assert await store.list_range("events", 10) == [{"n": 6}, {"n": 5}, {"n": 4}]


async def test_list_range_limits_and_orders_newest_first() -> None:
    store = MemoryStore()
    for i in range(4):
        await store.list_push("events", {"n": i}, max_len=10, ttl=60)
    assert await store.list_range("events", 2) == [{"n": 3}, {"n": 2}]
    assert await store.list_range("events", 0) == []
    assert await store.list_range("missing", 5) == []
