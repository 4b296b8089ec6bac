"""The ASGI servers ``serve`` can run the bridge under, each configured by its public settings.

``[server]`` holds the limits every connection is held to: ``head_timeout`` (seconds to send a
request head, and to stay idle between requests), ``max_head_bytes`` (a bigger head is answered
431) and ``max_connections`` (connections served at once). How each server takes them:

- **granian** (the default), embedded in the bridge's own event loop (``granian.server.embed``):
  ``HTTP1Settings.header_read_timeout``, ``max_buffer_size`` and ``backpressure``. Its HTTP/1
  connection reads at most ``max_buffer_size`` bytes ahead of the request it answers, so
  pipelining is bounded too. HTTP/1 only: the HTTP/2 settings have limits of their own, and the
  bridge sits behind the site's proxy.
- **uvicorn** (httptools): no deadline for a request head, no cap on its size, unbounded
  pipelining; ``head_timeout`` only bounds idle keep-alive connections.
- **hypercorn**: ``keep_alive_timeout`` and ``h11_max_incomplete_size``; slower.

The README's "Serving" section has the measurements behind the choice. Before any of them
answers, :func:`tune_gc` fits the garbage collector to a server's work (README, "Performance").
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from collections.abc import Coroutine
from typing import Any

from bridge.settings.schema import ServerSettings

log = logging.getLogger("bridge.servers")

GRACEFUL_SHUTDOWN = 3  # seconds in-flight requests get to finish (hypercorn's default)


def shutdown_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event


async def serve(
    app: Any,
    host: str,
    port: int,
    settings: ServerSettings,
    *,
    server: str | None = None,
    shutdown: asyncio.Event | None = None,
    tune: bool = True,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, or until ``shutdown`` is set.

    ``server`` is ``settings.asgi_server`` unless given: ``granian``, ``uvicorn``,
    ``uvicorn-h11`` (uvicorn with its h11 parser) or ``hypercorn``. ``tune``: fit the garbage
    collector to a server's work first (:func:`tune_gc`); a server that shares its process
    with other work (a test run) passes False.
    """
    name = server or settings.asgi_server
    if tune:
        tune_gc()
    if name == "granian":
        await serve_granian(app, host, port, settings, shutdown=shutdown)
    elif name in ("uvicorn", "uvicorn-h11"):
        http = "h11" if name == "uvicorn-h11" else "httptools"
        await serve_uvicorn(app, host, port, settings, http=http, shutdown=shutdown)
    elif name == "hypercorn":
        await serve_hypercorn(app, host, port, settings, shutdown=shutdown)
    else:
        raise ValueError(f"unknown ASGI server {name!r}")


# Net new objects the cycle collector lets accumulate before a young collection: Python's
# default, 700, is a few dozen requests in flight (README, "Performance").
YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Make the cycle collector fit a server with many requests in flight.

    Two costs, both of requests that wait on a socket (Redis, Sentifyd): their objects outlive
    young collections, so (1) at 700 net new objects one ran every few dozen requests and
    walked every waiting request's objects, and (2) enough of them reached the oldest
    generation to make a full collection walk the whole heap, modules included, every half
    second, stopping every request for 50-70 ms. So: what exists now (the modules, the app and
    its parts) is frozen (``gc.freeze``, the standard library's way to exempt objects that live
    as long as the process; they are still freed when nothing refers to them), after
    collecting the garbage so none of it is kept; and the young generation's threshold is
    :data:`YOUNG_THRESHOLD`. Memory the collector has yet to find is bounded by that many
    objects.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (uvicorn[standard] brings it)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


class _NotExperimental(logging.Filter):
    """Drop granian's start-up notice that its embedded server is experimental: the README
    says so once, and an operator's log should not warn on every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "experimental" not in record.getMessage()


async def serve_granian(
    app: Any,
    host: str,
    port: int,
    settings: ServerSettings,
    *,
    shutdown: asyncio.Event | None = None,
) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    ensure_port_free(host, port)
    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGI,  # with lifespan: Quart's before/after_serving run
        http=HTTPModes.http1,
        websockets=False,
        backlog=1024,
        backpressure=settings.max_connections,
        http1_settings=HTTP1Settings(
            header_read_timeout=round(settings.head_timeout * 1000),
            keep_alive=True,
            max_buffer_size=settings.max_head_bytes,
        ),
        # granian's messages go through the bridge's own (JSON) handlers.
        log_dictconfig={
            "version": 1,
            "disable_existing_loggers": False,
            "loggers": {
                "_granian": {"level": "INFO", "propagate": True, "handlers": []},
                "granian.access": {"level": "WARNING", "propagate": True, "handlers": []},
            },
        },
        log_level=LogLevels.info,
        log_access=False,
    )
    logging.getLogger("_granian").addFilter(_NotExperimental())
    event = shutdown or shutdown_event()
    serving = asyncio.ensure_future(server.serve())
    stop = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([serving, stop], return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            server.stop()  # type: ignore[no-untyped-call]
        await serving  # a failure to start (the port taken) is raised here
    finally:
        stop.cancel()


def ensure_port_free(host: str, port: int) -> None:
    """Raise OSError (address in use) if something already listens on ``host:port``.

    granian binds with ``SO_REUSEPORT`` on Linux, so a second bridge started on a taken port
    would silently share it with the first; a plain bind first refuses it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        probe.bind((host, port))


async def serve_uvicorn(
    app: Any,
    host: str,
    port: int,
    settings: ServerSettings,
    *,
    http: str = "httptools",
    shutdown: asyncio.Event | None = None,
) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http,
        loop="none",  # the caller's loop (uvloop, see run)
        ws="none",  # no websockets here: do not import a websocket library
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        # The bridge decides which forwarded headers to believe (server.trusted_proxies).
        proxy_headers=False,
        h11_max_incomplete_event_size=settings.max_head_bytes,  # h11 only
        timeout_keep_alive=max(1, round(settings.head_timeout)),
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    # uvicorn handles SIGINT/SIGTERM itself: stop accepting, finish in-flight requests, exit.
    instance = uvicorn.Server(config)
    if shutdown is None:
        await instance.serve()
        return

    async def stop_on_shutdown() -> None:
        await shutdown.wait()
        instance.should_exit = True

    stopper = asyncio.ensure_future(stop_on_shutdown())
    try:
        await instance.serve()
    finally:
        stopper.cancel()


async def serve_hypercorn(
    app: Any,
    host: str,
    port: int,
    settings: ServerSettings,
    *,
    shutdown: asyncio.Event | None = None,
) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.h11_max_incomplete_size = settings.max_head_bytes
    config.keep_alive_timeout = settings.head_timeout
    config.graceful_timeout = GRACEFUL_SHUTDOWN
    event = shutdown or shutdown_event()
    await hypercorn_serve(app, config, shutdown_trigger=event.wait)
