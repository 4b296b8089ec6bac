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
    RedisServer,
    Secrets,
    fake_sentifyd,
    first_token_requests,
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
    for status, _ in await first_token_requests(port, cookies, CONNECTIONS):
        statuses[status] = statuses.get(status, 0) + 1
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
    redis_proc = RedisServer(workdir) if use_redis else None
    store_url = redis_proc.url if redis_proc is not None else "memory://"
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
