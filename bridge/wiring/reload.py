"""Reload the settings without a restart: ``serve`` calls :meth:`Reloader.reload` on SIGHUP.

A reload reads the TOML file and the secrets again (the environment as the process holds it,
and the files the settings name: ``<VARIABLE>_FILE`` secrets, ``BRIDGE_ADMIN_TOKENS_FILE``),
validates them as start-up does, then builds a new set of parts (:func:`bridge.wiring.assemble`)
on the same store and metrics and swaps it in with one assignment. A request reads its parts
once, when it starts (``Bridge.of(app)``), so requests in flight finish on the old parts and new
ones get the new; sessions and handles live in the store and survive. The old parts' outbound
clients are closed :data:`RETIRE_AFTER` seconds later, when every request that could hold them
has long been answered.

A file that does not validate changes nothing: one log line names the failing setting, and the
old settings keep serving. What is bound at start-up (the listening address, the store, the
server and its limits, the routes served: ``/metrics``, the admin API and console, the OIDC
callbacks) keeps its start-up value until a restart; the log line of a reload names each such
setting that changed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from msgspec.structs import replace

from bridge.errors import ConfigError
from bridge.settings.schema import Settings
from bridge.wiring import Bridge

log = logging.getLogger("bridge.reload")

# Longer than any request waits (Sentifyd's timeout and retries, a lock, the site's who-am-I).
RETIRE_AFTER = 120.0

# Sections bound when the process starts: the listening socket, the server and its limits, the
# store's connections, the demo's wiring. A new value is named, and the old one kept.
PINNED = ("server", "store", "demo")


def restart_only(old: Settings, new: Settings) -> list[str]:
    """Name what differs between ``old`` and ``new`` but only takes effect on a restart."""
    changed = [name for name in PINNED if getattr(old, name) != getattr(new, name)]
    if _serves_metrics(old) != _serves_metrics(new):
        changed.append("metrics (whether /metrics is served)")
    if bool(old.admin_tokens) != bool(new.admin_tokens) or old.admin.console != new.admin.console:
        changed.append("admin (whether the admin API and console are served)")
    if [p.redirect_path for p in old.oidc] != [p.redirect_path for p in new.oidc]:
        changed.append("login.oidc.redirect_path")
    return changed


def _serves_metrics(settings: Settings) -> bool:
    metrics = settings.metrics
    return metrics.enabled and (settings.metrics_token is not None or not metrics.require_token)


@dataclass
class Reloader:
    """Swap an app's parts for ones built from new settings (``build``: settings -> parts)."""

    app_extensions: dict[str, object]
    build: Callable[[Settings], Bridge]
    retire_after: float = RETIRE_AFTER
    retired: dict[asyncio.Task[None], Bridge] = field(default_factory=dict)

    @property
    def current(self) -> Bridge:
        bridge = self.app_extensions["bridge"]
        assert isinstance(bridge, Bridge)
        return bridge

    def reload(self, load: Callable[[], Settings]) -> bool:
        """Load settings with ``load`` and swap them in; on any ConfigError keep the old ones."""
        old = self.current
        try:
            loaded = load()
            pinned = restart_only(old.settings, loaded)
            # The pinned sections keep their running values; the rest is checked against them.
            settings = replace(loaded, **{name: getattr(old.settings, name) for name in PINNED})
            new = self.build(settings)
        except ConfigError as exc:
            # ConfigError messages name the setting and never quote a secret.
            log.error(
                "reload refused, the running settings stay",
                extra={"fields": {"error": str(exc)}},
            )
            return False
        new.broker.adopt(old.broker)
        self.app_extensions["bridge"] = new  # one assignment: each request sees old or new
        fields: dict[str, object] = {
            "source": settings.source,
            "avatars": [a.name for a in settings.avatars],
        }
        if pinned:
            fields["restart_needed"] = pinned
        log.info("reloaded", extra={"fields": fields})
        self._retire(old)
        return True

    def _retire(self, old: Bridge) -> None:
        async def close_later() -> None:
            await asyncio.sleep(self.retire_after)
            await old.aclose()

        try:
            task = asyncio.get_running_loop().create_task(close_later())
        except RuntimeError:  # no loop (a synchronous caller): nothing is in flight
            return
        self.retired[task] = old
        task.add_done_callback(lambda done: self.retired.pop(done, None))

    async def aclose(self) -> None:
        """Close the retired parts now (the app is stopping)."""
        retired, self.retired = self.retired, {}
        for task, old in retired.items():
            task.cancel()
            await old.aclose()


async def reloading(app: Any, load: Callable[[], Settings], serving: Awaitable[None]) -> None:
    """Await ``serving`` with SIGHUP reloading ``app``'s settings through ``load``."""
    reloader: Reloader = app.extensions["bridge.reloader"]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reloader.reload, load)
    try:
        await serving
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
