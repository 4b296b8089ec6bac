"""The Redis clients compared on the bridge's own Redis rows, in one run, alternating.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/redis_clients.py --duration 10 --rounds 2

Each variant is the bridge (``bench/apps.py bridge --redis-client NAME``, under ``--server``:
granian by default, as ``serve``) on one redis-server of the run's own, the stand-in Sentifyd
(50 ms latency) behind it, 50 concurrent clients from ``bench/loadgen.py``: the hot path
(each client a signed-in session with 8 tabs, tokens from the session's cache) and the refresh
path (each client rotating its own handle chain). Every row uses sessions of its own (fresh
site users), so no row meets another's.

Variants (``--clients``):
- ``memory``: the memory store, the reference the Redis rows are a share of;
- ``redis-py``: every command through redis-py's asyncio client (a pooled connection per
  command in flight; hiredis parses the replies when it is installed, as here);
- ``coredis``: the token hot path's two calls (``GET`` of the record and the swap script)
  through coredis 6, whose pool multiplexes the commands of concurrent callers over a few
  connections, everything else through redis-py as in ``redis-py``;
- ``pipe``: the store as it shipped before this comparison, the hot path's calls through its
  hand-written pipelined RESP2 connection (``bridge/store/pipe.py``); only where that module
  still exists (``git show 663760b:bridge/store/pipe.py``).

The variants run in turn in each round, the order rotated from round to round (the machine is
shared and its speed drifts). Reported per variant: req/s (mean of the rounds and each round),
p99, the bridge process's CPU per request (user + system, from /proc: less sensitive than
req/s to what else runs), and Redis commands per token request (``INFO commandstats``, the
scripts' own commands included, warm-up requests counted). Writes
``bench/results/redis_clients.{md,json}``; a row with any answer but 200 refuses the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    RESULTS,
    ROOT,
    NotAllOK,
    RedisServer,
    Secrets,
    bridge_process,
    code_commit,
    cpu_seconds,
    fake_sentifyd,
    free_port,
    load,
    require_all_200,
    site_cookies,
    write_bridge_config,
)

UPSTREAM_LATENCY = 0.05
TOKEN_TTL = 3600  # longer than the run: tokens come from each session's cache
SERVER = "granian"  # what serve runs by default
CLIENTS = ("memory", "redis-py", "coredis", "pipe")
MODES = (("tokens", "hot"), ("refresh", "refresh"))


def available(names: list[str]) -> list[str]:
    """The variants this checkout can run (the pipe only where its module exists)."""
    return [n for n in names if n != "pipe" or (ROOT / "bridge/store/pipe.py").exists()]


def run_variant(
    name: str,
    round_no: int,
    args: argparse.Namespace,
    keys: Secrets,
    workdir: Path,
    fake_port: int,
    redis: RedisServer,
) -> list[dict[str, Any]]:
    port = free_port()
    store_url = "memory://" if name == "memory" else redis.url
    config = write_bridge_config(workdir, port, fake_port, args.server, store_url=store_url)
    client = [] if name == "memory" else ["--redis-client", name]
    rows = []
    with bridge_process(f"bridge-{name}", args.server, port, config, keys, *client) as bridge:
        url = f"http://127.0.0.1:{port}/request_tokens"
        for mode, path in MODES:
            cookies = site_cookies(
                config, keys, args.concurrency, prefix=f"{name}-{round_no}-{mode}"
            )
            redis.reset()
            cpu = cpu_seconds(bridge.pid)
            result = require_all_200(
                f"{name} {path}",
                load(
                    url,
                    mode=mode,
                    concurrency=args.concurrency,
                    duration=args.duration,
                    cookies=cookies,
                ),
            )
            cpu = cpu_seconds(bridge.pid) - cpu
            total = result["requests"] + result["warmup_requests"]
            rows.append(
                {
                    "client": name,
                    "path": path,
                    "round": round_no,
                    "rps": result["rps"],
                    "p50_ms": result["p50_ms"],
                    "p99_ms": result["p99_ms"],
                    "requests": result["requests"],
                    "cpu_us_per_request": round(cpu / total * 1e6, 1),
                    "redis_commands_per_request": (
                        None if name == "memory" else round(redis.commands() / total, 2)
                    ),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        for _, path in MODES:
            mine = [r for r in rows if r["client"] == name and r["path"] == path]
            out.append(
                {
                    "client": name,
                    "path": path,
                    "rps": round(sum(r["rps"] for r in mine) / len(mine), 1),
                    "rps_rounds": [r["rps"] for r in mine],
                    "p99_ms": round(max(r["p99_ms"] for r in mine), 1),
                    "cpu_us_per_request": round(
                        sum(r["cpu_us_per_request"] for r in mine) / len(mine), 1
                    ),
                    "redis_commands_per_request": mine[0]["redis_commands_per_request"],
                }
            )
    return out


def markdown(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Run {meta['date']} at commit `{meta['commit']}` on {meta['machine']}; bridge "
        f"under {meta['server']}, {meta['concurrency']} concurrent clients, {meta['duration']:g} s "
        f"per row, {meta['rounds']} rounds alternating the variants; stand-in Sentifyd "
        f"with {UPSTREAM_LATENCY * 1000:.0f} ms latency; every answer 200.",
        "",
        "| Store client | path | req/s (mean) | each round | of memory store | p99 ms "
        "| bridge CPU us/request | Redis commands/request |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    memory = {r["path"]: r["rps"] for r in table if r["client"] == "memory"}
    for r in table:
        share = f"{r['rps'] / memory[r['path']]:.2f}" if r["path"] in memory else "-"
        per = r["redis_commands_per_request"]
        lines.append(
            f"| {r['client']} | {r['path']} | {r['rps']:,.0f} "
            f"| {', '.join(f'{x:,.0f}' for x in r['rps_rounds'])} | {share} "
            f"| {r['p99_ms']:.1f} | {r['cpu_us_per_request']:.0f} "
            f"| {'-' if per is None else f'{per:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--server", default=SERVER, help="granian, uvicorn or hypercorn")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--out", default=str(RESULTS / "redis_clients"), help="path prefix")
    args = parser.parse_args(argv)
    names = available([n for n in args.clients.split(",") if n])
    keys = Secrets()
    rows: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = code_commit()  # the code that runs, not wherever HEAD is by the end
    with tempfile.TemporaryDirectory(prefix="bench-redis-clients-") as tmp:
        workdir = Path(tmp)
        fake_port = free_port()
        try:
            with (
                fake_sentifyd(fake_port, keys, latency=UPSTREAM_LATENCY, token_ttl=TOKEN_TTL),
                RedisServer(workdir) as redis,
            ):
                for round_no in range(args.rounds):
                    shift = round_no % len(names)
                    for name in names[shift:] + names[:shift]:
                        rows += run_variant(name, round_no, args, keys, workdir, fake_port, redis)
        except NotAllOK as exc:
            print(f"not reported: {exc}", file=sys.stderr)
            return 1
    meta = {
        "date": started,
        "commit": commit,
        "concurrency": args.concurrency,
        "duration": args.duration,
        "rounds": args.rounds,
        "server": args.server,
        "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    table = summary(rows, names)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "summary": table, "rows": rows}, indent=2) + "\n"
    )
    text = markdown(table, meta)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
