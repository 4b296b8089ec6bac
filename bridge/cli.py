"""Command line: serve | demo | fake-sentifyd | check-config | sessions | events | audit."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.sessions.admin import Admin
    from bridge.store.base import Store

log = logging.getLogger("bridge.cli")


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.app import create_app
    from bridge.observe import tracing
    from bridge.observe.logs import configure_logging
    from bridge.settings.loader import load_settings
    from bridge.web.servers import run, serve
    from bridge.wiring.reload import reloading

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
                "base_path": settings.server.base_path,
                "store": settings.store.url.split("@")[-1],
                "asgi_server": settings.server.asgi_server,
            }
        },
    )
    provider = tracing.start()  # only when OTEL_* ask for traces (README, Traces)
    try:
        app = create_app(settings)
        # SIGHUP reads the file and the secrets again and swaps them in (bridge/wiring/reload.py).
        reload = reloading(
            app, lambda: load_settings(args.config), serve(app, host, port, settings.server)
        )
        run(reload)
    finally:
        tracing.stop(provider)  # flushes the spans still queued
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.doubles.demo import create_demo_app
    from bridge.observe.logs import configure_logging
    from bridge.web.servers import run, serve
    from bridge.wiring import Bridge

    configure_logging("INFO")
    app = create_demo_app(port=args.port, host=args.host, token_ttl=args.token_ttl)
    base = f"http://{args.host}:{args.port}"
    print(
        f"sentifyd-bridge demo: open {base}/  (Ctrl+C to stop)\n"
        f"  the shop's 'my devices' page: {base}/account/sessions (once signed in)\n"
        f"  the operator console: {base}/admin/  sign in with this run's operator token:\n"
        f"    {app.extensions['demo_operator_token']}",
        flush=True,
    )
    run(serve(app, args.host, args.port, Bridge.of(app).settings.server))
    return 0


def cmd_fake_sentifyd(args: argparse.Namespace) -> int:
    from bridge.doubles.fake_sentifyd import serve_fake_sentifyd
    from bridge.observe.logs import configure_logging

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
    from bridge.settings.loader import load_settings
    from bridge.settings.report import masked

    settings = load_settings(args.config)
    print(json.dumps(masked(settings), indent=2, sort_keys=False))
    return 0


def _operate(args: argparse.Namespace, action: Callable[[Admin], Awaitable[Any]]) -> int:
    """Run ``action`` against the store the config names (or the one a test injects)."""
    from bridge.errors import StoreUnavailable
    from bridge.sessions.admin import Admin
    from bridge.sessions.audit import Operator
    from bridge.settings.loader import load_settings
    from bridge.store import open_store
    from bridge.wiring import assemble

    settings = load_settings(args.config)
    store = getattr(args, "store", None)
    if store is None:
        if settings.store.url.startswith("memory://"):
            print(
                "sentifyd-bridge: the store is memory://, which lives inside the running server;"
                " this command cannot see it. Use the admin API (set BRIDGE_ADMIN_TOKEN) or a"
                " shared Redis store (store.url = redis://...).",
                file=sys.stderr,
            )
            return 2
        store = open_store(settings.store)

    async def run() -> Any:
        bridge = assemble(settings, store=store)
        try:
            name = args.actor or os.environ.get("BRIDGE_OPERATOR") or _os_user()
            return await action(Admin(bridge, Operator(name, "cli")))
        finally:
            await bridge.aclose()
            if getattr(args, "store", None) is None:
                await bridge.store.close()

    try:
        result = asyncio.run(run())
    except StoreUnavailable:
        print("sentifyd-bridge: the store is unavailable", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    if args.action == "list":
        if not 1 <= args.limit <= 500:
            print("sentifyd-bridge: --limit must be from 1 to 500", file=sys.stderr)
            return 2
        return _operate(
            args,
            lambda admin: admin.list_sessions(
                user=args.user, avatar=args.avatar, cursor=args.cursor, limit=args.limit
            ),
        )
    if not args.user:
        print(f"sentifyd-bridge: sessions {args.action} needs a USER", file=sys.stderr)
        return 2
    if args.action == "show":
        return _operate(args, lambda admin: admin.user(args.user, events=20))
    block = args.block

    async def revoke(admin: Admin) -> Any:
        seconds = admin.settings.admin.revoke_block if block is None else block
        return await admin.revoke_user(args.user, block=seconds)

    return _operate(args, revoke)


def cmd_events(args: argparse.Namespace) -> int:
    return _operate(args, lambda admin: admin.events(args.user, args.limit))


def cmd_audit(args: argparse.Namespace) -> int:
    import msgspec

    if not 1 <= args.limit <= 100_000:
        print("sentifyd-bridge: --limit must be from 1 to 100000", file=sys.stderr)
        return 2

    async def read(admin: Admin) -> Any:
        entries = await admin.audit_trail(args.limit, user=args.user, actor=args.by)
        return msgspec.to_builtins(entries)

    return _operate(args, read)


def _os_user() -> str:
    """Whom the CLI's audit entries name when --actor is not given: the account running it."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a bare container)
        return f"uid-{os.getuid()}"


def _add_actor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--actor", help="the name the audit trail records (default: $BRIDGE_OPERATOR, your login)"
    )


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

    p = sub.add_parser("sessions", help="list, show or revoke sessions in a shared (Redis) store")
    p.add_argument("action", choices=["list", "show", "revoke"])
    p.add_argument("user", nargs="?", help="the user id (show, revoke; filters list)")
    p.add_argument("--config", help="TOML config file (default: $BRIDGE_CONFIG)")
    p.add_argument("--avatar", help="list: only sessions using this avatar")
    p.add_argument("--cursor", help="list: the next_cursor of the previous page")
    p.add_argument("--limit", type=int, default=50, help="list: sessions per page")
    p.add_argument("--block", type=int, help="revoke: refuse new sessions for this many seconds")
    _add_actor(p)
    p.set_defaults(func=cmd_sessions)

    p = sub.add_parser("events", help="a user's recent lifecycle events, newest first")
    p.add_argument("user")
    p.add_argument("--config", help="TOML config file (default: $BRIDGE_CONFIG)")
    p.add_argument("--limit", type=int, default=50)
    _add_actor(p)
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("audit", help="the admin audit trail, newest first")
    p.add_argument("--config", help="TOML config file (default: $BRIDGE_CONFIG)")
    p.add_argument("--user", help="only actions on this user")
    p.add_argument("--by", help="only actions of this operator")
    p.add_argument("--limit", type=int, default=100)
    _add_actor(p)
    p.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None, *, store: Store | None = None) -> int:
    """Run a command; ``store`` replaces the configured store (tests)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.store = store
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
