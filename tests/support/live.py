"""Live servers on 127.0.0.1: a free port, and an ASGI app served in a thread as
``sentifyd-bridge serve`` serves it."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """An ASGI app served on 127.0.0.1 exactly as ``sentifyd-bridge serve`` serves it (granian,
    its default, uvicorn or hypercorn), in a thread with its own event loop."""

    def __init__(
        self, app: Any, port: int | None = None, server: str = "granian", *, tune_gc: bool = False
    ) -> None:
        self.app = app
        self.server = server
        # serve() fits the garbage collector to a server (bridge.web.servers.tune_gc): here the
        # process is the test run's, so only a test of that asks for it.
        self.tune_gc = tune_gc
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        from bridge.settings.schema import ServerSettings
        from bridge.web.servers import run, serve

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            task = asyncio.ensure_future(
                serve(
                    self.app,
                    "127.0.0.1",
                    self.port,
                    ServerSettings(),
                    server=self.server,
                    shutdown=self._stop,
                    tune=self.tune_gc,
                )
            )
            self._ready.set()
            await task

        try:
            run(main())  # on uvloop, as serve runs it
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()

    def start(self) -> LiveServer:
        self._thread.start()
        self._ready.wait(10)
        for _ in range(200):
            if self._error:
                raise RuntimeError("live server failed to start") from self._error
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                threading.Event().wait(0.025)
        raise RuntimeError("live server did not start")

    def stop(self) -> None:
        if self._loop and self._stop and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
