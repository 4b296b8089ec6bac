"""Where sessions, handles, locks and events live: memory (one process) or Redis (many)."""

from __future__ import annotations

from urllib.parse import urlsplit

from bridge.errors import ConfigError
from bridge.settings import REDIS_SCHEMES, StoreSettings
from bridge.store.base import Store
from bridge.store.memory import MemoryStore


def open_store(settings: StoreSettings) -> Store:
    """Return the store that ``settings.url`` names."""
    scheme = urlsplit(settings.url).scheme
    if scheme == "memory":
        return MemoryStore(prefix=settings.prefix)
    if scheme in REDIS_SCHEMES:
        from bridge.store.redis import RedisStore

        return RedisStore.from_settings(settings)
    raise ConfigError(f"store.url: unsupported scheme {scheme!r}")


__all__ = ["MemoryStore", "Store", "open_store"]
