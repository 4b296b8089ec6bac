"""Memory per idle session, measured from outside the serving process.

Starts ``sentifyd-bridge serve`` (the real CLI; memory store, or Redis with ``--redis``) and the
stand-in Sentifyd, then creates sessions over HTTP: each a distinct user with the site's login
cookie, one token request each (so each session holds its record, its sealed tokens, a chain,
the user's index, its lifecycle events and the verified-cookie cache entry), and nothing else.
Reports the growth of the serving process's RSS (and, on Redis, of ``INFO memory``
``used_memory``) per session between a warmed-up baseline and each checkpoint.

    .venv/bin/python bench/sessions_outside.py --sessions 5000,50000
    .venv/bin/python bench/sessions_outside.py --sessions 5000 --redis

Prints one JSON object; exits 1 if any answer was not a 200 (then nothing is reported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    BIN,
    NotAllOK,
    Proc,
    Secrets,
    fake_sentifyd,
    free_port,
    rss_kb,
    site_cookies,
    write_bridge_config,
)

WARMUP = 1000
CONNECTIONS = 50


async def create_sessions(port: int, cookies: list[str]) -> dict[str, int]:
    """One token request per cookie over CONNECTIONS keep-alive connections; count statuses."""
    statuses: dict[str, int] = {}
    queue = iter(cookies)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for cookie in queue:
                writer.write(
                    (
                        f"GET /request_tokens HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        "Accept: application/json\r\nSec-Fetch-Site: same-origin\r\n"
                        f"Cookie: session={cookie}\r\n\r\n"
                    ).encode("latin-1")
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1].decode()
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return statuses


def redis_used(port: int) -> tuple[int, int]:
    """Redis's ``used_memory`` and, within it, ``used_memory_dataset`` (the keys and values
    alone: no client buffers, which grow in a burst of connections and shrink after it)."""
    import redis

    with redis.Redis(host="127.0.0.1", port=port) as client:
        info = client.info("memory")
        return int(info["used_memory"]), int(info["used_memory_dataset"])


def measure(sizes: list[int], use_redis: bool, warmup: int = WARMUP) -> dict[str, Any]:
    keys = Secrets()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    fake_port, port = free_port(), free_port()
    redis_proc = None
    store_url = "memory://"
    if use_redis:
        redis_port = free_port()
        redis_proc = Proc(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            redis_port,
            cwd=workdir,
        )
        store_url = f"redis://127.0.0.1:{redis_port}/0"
    config = write_bridge_config(workdir, port, fake_port, "uvicorn", store_url=store_url)
    total = max(sizes)
    cookies = site_cookies(config, keys, warmup + total, prefix="idle")
    out: dict[str, Any] = {
        "store": "redis" if use_redis else "memory",
        "warmup": warmup,
        "checkpoints": [],
    }
    try:
        if redis_proc is not None:
            redis_proc.__enter__()
        with (
            fake_sentifyd(fake_port, keys, latency=0.0, token_ttl=3600),
            Proc(
                "bridge-serve",
                [str(BIN / "sentifyd-bridge"), "serve", "--config", str(config)],
                port,
                env=keys.env(),
            ) as bridge,
        ):
            statuses = asyncio.run(create_sessions(port, cookies[:warmup]))
            _require_200("warm-up", statuses)
            time.sleep(1.0)  # let the server settle after the burst
            base_rss = rss_kb(bridge.pid)
            base_redis = redis_used(redis_proc.port) if redis_proc else (0, 0)
            done = 0
            for size in sorted(sizes):
                batch = cookies[warmup + done : warmup + size]
                statuses = asyncio.run(create_sessions(port, batch))
                _require_200(f"{size} sessions", statuses)
                done = size
                time.sleep(1.0)
                point: dict[str, Any] = {
                    "sessions": size,
                    "rss_growth_kb": rss_kb(bridge.pid) - base_rss,
                }
                point["rss_bytes_per_session"] = round(point["rss_growth_kb"] * 1024 / size)
                if redis_proc is not None:
                    used, dataset = redis_used(redis_proc.port)
                    point["redis_bytes_per_session"] = round((used - base_redis[0]) / size)
                    point["redis_dataset_bytes_per_session"] = round(
                        (dataset - base_redis[1]) / size
                    )
                out["checkpoints"].append(point)
                print(json.dumps(point), file=sys.stderr, flush=True)
    finally:
        if redis_proc is not None:
            redis_proc.stop()
    return out


def _require_200(name: str, statuses: dict[str, int]) -> None:
    if set(statuses) != {"200"}:
        raise NotAllOK(f"{name}: answers {statuses}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="5000,50000", help="checkpoints, comma-separated")
    parser.add_argument("--redis", action="store_true", help="a Redis store instead of memory")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="sessions before the baseline")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sessions.split(",") if n]
    if not sizes or not all(0 < n <= 200_000 for n in sizes):
        parser.error("--sessions: counts in (0, 200000]")
    try:
        result = measure(sizes, args.redis, max(1, args.warmup))
    except (NotAllOK, subprocess.SubprocessError) as exc:
        print(f"not reported: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
