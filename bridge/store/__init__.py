"""Where sessions, handles, locks and events live: memory (one process) or Redis (many)."""

from __future__ import annotations

from bridge.settings.schema import StoreSettings
from bridge.store.base import Store
from bridge.store.memory import MemoryStore


def open_store(settings: StoreSettings) -> Store:
    """Return the store that ``settings.url`` names."""
    if settings.address is None:
        return MemoryStore(prefix=settings.prefix)
    from bridge.store.redis import RedisStore

    return RedisStore.from_settings(settings)


__all__ = ["MemoryStore", "Store", "open_store"]
