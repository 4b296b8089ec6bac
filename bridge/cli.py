"""Command line: serve | demo | fake-sentifyd | check-config."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from bridge.errors import ConfigError

log = logging.getLogger("bridge.cli")

# Request heads beyond this are refused by the server itself (a browser never sends more).
MAX_HEADER_BYTES = 16 * 1024


def _shutdown_event() -> asyncio.Event:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event


async def _serve(app: Any, host: str, port: int, server: str = "hypercorn") -> None:
    if server == "uvicorn":
        await _serve_uvicorn(app, host, port)
        return
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # Headers beyond this are refused by the server itself (a browser never sends more).
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    event = _shutdown_event()
    await serve(app, config, shutdown_trigger=event.wait)


async def _serve_uvicorn(app: Any, host: str, port: int, http: str = "httptools") -> None:
    import uvicorn

    from bridge.serving import BoundedHttpToolsProtocol

    BoundedHttpToolsProtocol.max_head_bytes = MAX_HEADER_BYTES
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=BoundedHttpToolsProtocol if http == "httptools" else http,
        loop="none",  # the caller's loop (uvloop, see _run)
        ws="none",  # no websockets here: do not import a websocket library
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        # The bridge decides which forwarded headers to believe (server.trusted_proxies).
        proxy_headers=False,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_graceful_shutdown=3,  # hypercorn's default graceful_timeout
    )
    # uvicorn handles SIGINT/SIGTERM itself: stop accepting, finish in-flight requests, exit.
    await uvicorn.Server(config).serve()


def _run(main: Any, server: str) -> None:
    """Run ``main`` on uvloop under uvicorn, on asyncio's own loop under hypercorn."""
    if server == "uvicorn":
        try:
            import uvloop
        except ImportError:  # uvicorn[standard] installs it wherever it builds
            asyncio.run(main)
            return
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    else:
        asyncio.run(main)


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.app import create_app
    from bridge.logs import configure_logging
    from bridge.settings import load_settings

    settings = load_settings(args.config)
    configure_logging(settings.log_level)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    log.info(
        "serving",
        extra={
            "fields": {
                "bind": f"{host}:{port}",
                "public_url": settings.server.public_url,
                "store": settings.store.url.split("@")[-1],
            }
        },
    )
    server = settings.server.asgi_server
    _run(_serve(create_app(settings), host, port, server), server)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import create_demo_app
    from bridge.logs import configure_logging

    configure_logging("INFO")
    app = create_demo_app(port=args.port, host=args.host, token_ttl=args.token_ttl)
    print(
        f"sentifyd-bridge demo: open http://{args.host}:{args.port}/  (Ctrl+C to stop)", flush=True
    )
    asyncio.run(_serve(app, args.host, args.port))
    return 0


def cmd_fake_sentifyd(args: argparse.Namespace) -> int:
    from bridge.fake_sentifyd import serve_fake_sentifyd
    from bridge.logs import configure_logging

    configure_logging("INFO")
    api_key = args.api_key or os.environ.get("AVATAR_API_KEY", "")
    if not api_key:
        print("fake-sentifyd: give --api-key or set AVATAR_API_KEY", file=sys.stderr)
        return 2
    keys: Any = {api_key: args.avatar_id} if args.avatar_id else [api_key]
    print(f"fake Sentifyd on http://{args.host}:{args.port}", flush=True)
    asyncio.run(
        serve_fake_sentifyd(
            args.host,
            args.port,
            keys,
            token_ttl=args.token_ttl,
            latency=args.latency,
            shape=args.shape,
        )
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from bridge.settings import load_settings

    settings = load_settings(args.config)
    print(json.dumps(settings.masked(), indent=2, sort_keys=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentifyd-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the bridge (production)")
    p.add_argument("--config", help="TOML config file (default: $BRIDGE_CONFIG)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="everything embedded, for a first look")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-ttl", type=int, default=30, help="stand-in access token lifetime (s)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("fake-sentifyd", help="run the stand-in Sentifyd server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--api-key", help="accepted API key (default: $AVATAR_API_KEY)")
    p.add_argument("--avatar-id", help="the avatar id that key belongs to (default: any)")
    p.add_argument("--token-ttl", type=int, default=60)
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    p.add_argument("--shape", default="wrapped_snake")
    p.set_defaults(func=cmd_fake_sentifyd)

    p = sub.add_parser("check-config", help="validate a config and print it, secrets masked")
    p.add_argument("--config", help="TOML config file (default: $BRIDGE_CONFIG)")
    p.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"sentifyd-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # e.g. the port is taken: one line, not a traceback
        print(f"sentifyd-bridge: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
