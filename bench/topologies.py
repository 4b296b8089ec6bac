"""Two bridge instances on each Redis topology: one Redis, Sentinel, Cluster.

    .venv/bin/pip install -e '.[bench,test]'
    .venv/bin/python bench/topologies.py --duration 10 --concurrency 50

For each topology, on 127.0.0.1 and without persistence: the Redis processes (one server; a
master, a replica and three sentinels; three masters with a replica each, made with
``redis-cli --cluster create``), the stand-in Sentifyd (50 ms latency) and two bridge
instances under uvicorn. Two load generators run side by side, half the clients each, one per
instance (as a balancer would split them); each client holds its own cookie jar. Rate limits
are at their defaults except ``per_session`` (each session is driven far faster than a
component drives it), as in ``run.py``; every client is signed in, so none counts per address.

Reports, per topology and path (hot, refresh): the two instances' combined throughput, the
worse p50/p99 of the two, and the Redis commands per token request, counted by
``INFO commandstats`` on every master (reset before the run). The count includes the
commands that the bridge's Lua scripts run inside Redis, and leaves out what Redis's own
machinery sends (replication, sentinels' and the cluster's pings and hellos, INFO). Each
run's warm-up (one request per client, which starts its session) is counted too.

The Redis setups are the test suite's (``tests/support/redis.py``), so this needs the test
extras and the same Debian packages (``redis-server``, ``redis-sentinel``, ``redis-tools``).
Writes ``bench/results/topologies.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from common import (
    RESULTS,
    ROOT,
    Secrets,
    bridge_process,
    fake_sentifyd,
    free_port,
    load,
    require_all_200,
    site_cookies,
    write_bridge_config,
)

UPSTREAM_LATENCY = 0.05
TOKEN_TTL = 3600  # longer than the run: tokens come from each session's cache
SERVER = "uvicorn"
TOPOLOGIES = ("single", "sentinel", "cluster")
# Commands Redis's own machinery sends, not the bridge.
NOT_THE_BRIDGES = {
    "info", "ping", "replconf", "psync", "sync", "publish", "subscribe", "cluster", "client",
    "hello", "config", "role", "command", "select", "auth", "readonly",
}  # fmt: skip


@contextmanager
def topology(name: str, directory: Path) -> Iterator[tuple[str, list[Any]]]:
    """Start a topology; yield its store URL and its masters (servers with ``client()``)."""
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("BRIDGE_SECRET_KEY", "x" * 48)  # tests/conftest.py reads it
    from support.redis import ClusterSetup, RedisServer, SentinelSetup

    if name == "single":
        server = RedisServer(directory).start()
        try:
            yield server.url, [server]
        finally:
            server.stop()
    elif name == "sentinel":
        sentinel = SentinelSetup(directory).start()
        try:
            yield sentinel.url, [sentinel.master]
        finally:
            sentinel.stop()
    else:
        cluster = ClusterSetup(directory).start()
        try:
            yield cluster.url, cluster.masters()
        finally:
            cluster.stop()


def commands(masters: list[Any]) -> dict[str, int]:
    """The bridge's commands so far on every master, by name."""
    counts: dict[str, int] = {}
    for server in masters:
        with server.client() as client:
            for key, stats in client.info("commandstats").items():
                name = key.removeprefix("cmdstat_")
                if name.split("|")[0] not in NOT_THE_BRIDGES:
                    counts[name] = counts.get(name, 0) + int(stats["calls"])
    return counts


def reset(masters: list[Any]) -> None:
    for server in masters:
        with server.client() as client:
            client.config_resetstat()


def run_topology(
    name: str, args: argparse.Namespace, keys: Secrets, workdir: Path
) -> list[dict[str, Any]]:
    rows = []
    fake_port = free_port()
    with ExitStack() as stack:
        (workdir / name).mkdir()
        url, masters = stack.enter_context(topology(name, workdir / name))
        stack.enter_context(
            fake_sentifyd(fake_port, keys, latency=UPSTREAM_LATENCY, token_ttl=TOKEN_TTL)
        )
        bridges = []
        for index in range(2):
            port = free_port()
            # The limits of run.py (common.LIMITS): the config already holds its [limits].
            config = write_bridge_config(workdir, port, fake_port, SERVER, store_url=url)
            stack.enter_context(
                bridge_process(f"bridge-{name}-{index}", SERVER, port, config, keys)
            )
            bridges.append((port, config))
        half = max(1, args.concurrency // 2)
        for mode in ("tokens", "refresh"):
            cookie_sets = [
                site_cookies(config, keys, half, prefix=f"{name}-{mode}-{i}")
                for i, (_, config) in enumerate(bridges)
            ]
            reset(masters)
            with ThreadPoolExecutor(2) as pool:
                runs = [
                    pool.submit(
                        load,
                        f"http://127.0.0.1:{port}/request_tokens",
                        mode=mode,
                        concurrency=half,
                        duration=args.duration,
                        cookies=cookies,
                    )
                    for (port, _), cookies in zip(bridges, cookie_sets, strict=True)
                ]
                # Any answer but a 200 refuses the run, as in run.py.
                results = [require_all_200(f"{name} {mode}", run.result()) for run in runs]
            counts = commands(masters)
            total = sum(r["requests"] + r["warmup_requests"] for r in results)
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
            rows.append(
                {
                    "topology": name,
                    "path": "hot" if mode == "tokens" else "refresh",
                    "rps": round(sum(r["rps"] for r in results), 1),
                    "p50_ms": max(r["p50_ms"] for r in results),
                    "p99_ms": max(r["p99_ms"] for r in results),
                    "requests": total,
                    "errors": sum(r["errors"] for r in results),
                    "commands_per_request": round(sum(counts.values()) / total, 2) if total else 0,
                    "top_commands": {k: round(v / total, 2) for k, v in top} if total else {},
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


LABELS = {
    "single": "one Redis (redis://)",
    "sentinel": "Sentinel (redis+sentinel://)",
    "cluster": "Cluster, 3 masters (redis+cluster://)",
}


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Run {meta['date']} on {meta['machine']}; two instances ({SERVER}), "
        f"{meta['concurrency']} concurrent clients split between them, "
        f"{meta['duration']:g} s per row; stand-in Sentifyd with "
        f"{UPSTREAM_LATENCY * 1000:.0f} ms latency.",
        "",
        "| Store | path | req/s | p50 ms | p99 ms | requests | errors "
        "| Redis commands per request | of which |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        top = ", ".join(f"{k} {v:g}" for k, v in r["top_commands"].items())
        lines.append(
            f"| {LABELS[r['topology']]} | {r['path']} | {r['rps']:,.0f} "
            f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['requests']:,} "
            f"| {r['errors']} | {r['commands_per_request']:g} | {top} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--topology", nargs="+", choices=TOPOLOGIES, default=list(TOPOLOGIES))
    parser.add_argument("--out", default=str(RESULTS / "topologies"), help="results path prefix")
    args = parser.parse_args(argv)
    keys = Secrets()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-topologies-") as tmp:
        for name in args.topology:
            rows += run_topology(name, args, keys, Path(tmp))
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "concurrency": args.concurrency,
        "duration": args.duration,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = markdown(rows, meta)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
