"""The servers the benchmark starts, each in its own process, under a chosen ASGI server.

- ``ceiling``: a bare Quart JSON endpoint (``GET /json``), the framework's ceiling;
- ``bridge``: the bridge, built exactly as ``sentifyd-bridge serve --config FILE`` builds it;
- ``null``: a canned HTTP response on raw asyncio (uvloop), to measure the load generator's
  own ceiling: whatever the generator reaches here, no Python web stack can beat.

``--server`` is ``granian`` (serve's default), ``hypercorn``, ``uvicorn`` (uvloop + httptools)
or ``uvicorn-h11`` (uvloop + h11), all configured by :mod:`bridge.web.servers` from ``[server]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from quart import Quart, Response, jsonify

from bridge.settings.schema import ServerSettings
from bridge.web.servers import run, serve

SERVERS = ("granian", "hypercorn", "uvicorn", "uvicorn-h11")
CANNED = (
    b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
)


def ceiling_app() -> Quart:
    app = Quart("ceiling")

    @app.get("/json")
    async def json_endpoint() -> Response:
        return jsonify({"ok": True})

    return app


async def _serve_as(app: Any, port: int, server: str, settings: ServerSettings) -> None:
    await serve(app, "127.0.0.1", port, settings, server=server)


class _Canned(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # One canned answer per request head received (the generator sends one at a time).
        self.transport.write(CANNED * data.count(b"\r\n\r\n"))


async def _null(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Canned, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("ceiling", "bridge", "null"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=SERVERS, default="granian")
    parser.add_argument("--config", help="the bridge's TOML config")
    parser.add_argument(
        "--redis-client",
        choices=("pipe", "redis-py", "coredis"),
        help="the Redis store's client (bench/redis_clients.py compares them)",
    )
    args = parser.parse_args(argv)
    if args.what == "null":
        run(_null(args.port))
    elif args.what == "ceiling":
        run(_serve_as(ceiling_app(), args.port, args.server, ServerSettings()))
    else:
        from bridge.app import create_app
        from bridge.observe.logs import configure_logging
        from bridge.settings import load_settings

        settings = load_settings(args.config)
        configure_logging(settings.log_level)
        store = None
        if args.redis_client:
            from store_clients import make_store

            store = make_store(args.redis_client, settings.store)
        app = create_app(settings, store=store)
        run(_serve_as(app, args.port, args.server, settings.server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
