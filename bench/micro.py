"""CPU time per token request inside the app, without a server or a network: a steady number
for comparing one change to the bridge with the next on a noisy machine.

Calls the Quart app as an ASGI callable (the bridge's real app, the memory store, the stand-in
Sentifyd in-process), 50 sessions round robin, and reports the process CPU time per request
for the hot path (each session's tabs, as ``loadgen.py``'s ``tokens`` mode: opened, then
refreshed round-robin from the cached tokens), the refresh path (one chain per session) and
the bare Quart JSON endpoint (the framework's share), with the limits ``common.LIMITS``.

    .venv/bin/python bench/micro.py --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from apps import ceiling_app
from common import Secrets, site_cookies, write_bridge_config
from loadgen import TABS


async def call(app: Any, path: str, query: bytes, cookie: str) -> tuple[int, bytes, list[Any]]:
    """One GET through the app's ASGI interface; return status, body and headers."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"accept", b"application/json"),
            (b"sec-fetch-site", b"same-origin"),
            (b"cookie", cookie.encode()),
        ],
    }
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Future()  # no disconnect: the app cancels this wait when it is done
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], body, start["headers"]


async def measure(requests: int) -> dict[str, Any]:
    from bridge.app import create_app
    from bridge.doubles.fake_sentifyd import create_fake_sentifyd
    from bridge.settings import load_settings

    keys = Secrets()
    config = write_bridge_config(
        Path(tempfile.mkdtemp(prefix="bench-micro-")), 8000, 9, "hypercorn"
    )
    settings = load_settings(config, keys.env())
    fake = create_fake_sentifyd([keys.api_key], token_ttl=3600)
    app = create_app(settings, sentifyd_transport=httpx.ASGITransport(app=fake))
    ceiling = ceiling_app()
    out: dict[str, Any] = {}
    async with app.test_app(), ceiling.test_app():
        sessions = []
        for site in site_cookies(config, keys, 50):
            status, body, headers = await call(app, "/request_tokens", b"", f"session={site}")
            assert status == 200, body
            bridge = next(v.decode().split(";")[0] for k, v in headers if k == b"set-cookie")
            handle = json.loads(body)["tokens"]["refreshToken"]
            # The cookies, the refresh path's chain, the hot path's tabs and its turn.
            sessions.append([f"session={site}; {bridge}", handle, [], 0])

        async def run(kind: str) -> float:
            started = time.process_time()
            for i in range(requests):
                session = sessions[i % len(sessions)]
                if kind == "ceiling":
                    status, body, _ = await call(ceiling, "/json", b"", "")
                elif kind == "hot":
                    tabs, turn = session[2], session[3]
                    query = b""
                    if len(tabs) == TABS:
                        query = f"refreshToken={tabs[turn % TABS]}".encode()
                    status, body, _ = await call(app, "/request_tokens", query, session[0])
                    if status == 200:
                        answer = json.loads(body)["tokens"]["refreshToken"]
                        if query:
                            tabs[turn % TABS] = answer
                            session[3] = turn + 1
                        else:
                            tabs.append(answer)
                else:
                    status, body, _ = await call(
                        app, "/request_tokens", f"refreshToken={session[1]}".encode(), session[0]
                    )
                    session[1] = json.loads(body)["tokens"]["refreshToken"]
                if status != 200:
                    raise RuntimeError(f"{kind}: {status} {body[:200]!r}")
            return (time.process_time() - started) / requests * 1e6

        for kind in ("ceiling", "hot", "refresh"):
            await run(kind)  # warm-up
            out[f"{kind}_cpu_us"] = round(min([await run(kind) for _ in range(3)]), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    if not 0 < args.requests <= 1_000_000:
        parser.error("--requests must be in (0, 1000000]")
    from bridge.observe.logs import configure_logging

    # As ``serve`` does: one JSON line per request, here into a file nobody reads.
    with open(os.devnull, "w") as sink:
        configure_logging("INFO", sink)
        print(json.dumps(asyncio.run(measure(args.requests))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
