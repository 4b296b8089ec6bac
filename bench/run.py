"""The benchmark: one run, side by side, same machine, same load generator.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/run.py --duration 10 --concurrency 50

Measures, each server in its own process on 127.0.0.1 and the load generator in another (per
ASGI server one block: its bare ceiling, the bridge on the memory store and on Redis, in turn,
and its ceiling again; the blocks run ``--rounds`` times, 2 by default, the two stores' order
swapped each round, and a row reports the mean of its rounds and each one: the machine's speed
drifts over minutes, so rows compared with each other are run side by side):
- the load generator's own ceiling (a canned response on raw uvloop);
- (a) a bare Quart JSON endpoint, the framework's ceiling, under each ASGI server compared,
  measured twice in fresh processes, first and again right after the bridge's (c) rows (the
  machine's speed drifts over a run and from one process to the next): the ratios take the mean;
- (b) the documented Flask snippet under gunicorn (5 sync workers: (2 x cores) + 1), calling
  the stand-in Sentifyd with 50 ms latency;
- (c) the bridge's token endpoint, the hot path (a cookie jar per virtual client, tokens from
  the session's cache) and the refresh path (each client rotating its own handle chain),
  under each ASGI server compared, the same stand-in Sentifyd behind it;
- (d) the same two bridge rows on Redis (a redis-server of the run's own), with the Redis
  commands per token request counted by Redis (``INFO commandstats``);
- upstream calls per 1,000 token requests from 50 fresh sessions (bridge and snippet);
- memory per idle session measured from outside (bench/sessions_outside.py): the RSS growth
  of ``sentifyd-bridge serve`` per session created over HTTP, memory store, at 5,000 and 50,000
  sessions; and Redis's ``used_memory`` growth per session on a Redis store.

Prints a markdown table with the targets as ratios from this run, and writes
``bench/results/latest.{md,json,png}``. The bridge runs with the limits in ``common.LIMITS``
(stated in the report); a run in which any answer was not a 200 is not reported at all: it
exits 1 naming the scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    GUNICORN_WORKERS,
    LIMITS,
    LIMITS_NOTE,
    PYTHON,
    RESULTS,
    NotAllOK,
    Proc,
    RedisServer,
    Secrets,
    bridge_process,
    ceiling_process,
    code_commit,
    fake_sentifyd,
    free_port,
    get_json,
    load,
    require_all_200,
    site_cookies,
    snippet_process,
    write_bridge_config,
)

UPSTREAM_LATENCY = 0.05
TOKEN_TTL = 3600  # longer than the run: one token lifetime covers every request
CALLS_SESSIONS = 50
CALLS_REQUESTS = 1000
MEMORY_SIZES = (5_000, 50_000)
REDIS_MEMORY_SIZE = 5_000
SESSION_BUDGET = 3072  # 3 KB per idle session (issue 23's target)


def _row(name: str, result: dict[str, Any], note: str = "") -> dict[str, Any]:
    require_all_200(name, result)
    return {
        "name": name,
        "rps": result["rps"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "requests": result["requests"],
        "errors": result["errors"],
        "statuses": result["statuses"],
        "note": note,
    }


def throughput(
    args: argparse.Namespace, keys: Secrets, workdir: Path, log: Any
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    run = dict(concurrency=args.concurrency, duration=args.duration)

    port = free_port()
    with Proc("null", [PYTHON, str(BENCH / "apps.py"), "null", "--port", str(port)], port):
        rows.append(
            _row(
                "load generator ceiling (canned response)",
                load(f"http://127.0.0.1:{port}/", **run),
                "raw uvloop",
            )
        )
    log(rows[-1])

    fake_port = free_port()
    with fake_sentifyd(fake_port, keys, latency=UPSTREAM_LATENCY, token_ttl=TOKEN_TTL):
        fake = f"http://127.0.0.1:{fake_port}"
        port = free_port()
        with snippet_process("flask-snippet", port, fake, keys.api_key):
            result = load(f"http://127.0.0.1:{port}/request_tokens", **run)
            rows.append(
                _row(
                    "(b) documented Flask snippet, gunicorn",
                    result,
                    f"{GUNICORN_WORKERS} sync workers",
                )
            )
            log(rows[-1])
            snippet_calls = _upstream_calls(fake, port, None, CALLS_SESSIONS)

        # Per server, in one block: the bare ceiling, the bridge on the memory store and on
        # Redis, the ceiling again; the two stores' rows in turn, their order swapped from round
        # to round. The machine's speed drifts over minutes (other tenants of its host): the
        # ratios compare rows run side by side, and each row is the mean of its rounds.
        measured: dict[str, list[dict[str, Any]]] = {}

        def add(row: dict[str, Any]) -> None:
            measured.setdefault(row["name"], []).append(row)
            log(row)

        bridge_calls: dict[str, Any] = {}
        for turn in range(args.rounds):
            for server in args.servers:
                add(_ceiling(server, f"(a) bare Quart JSON, {server}", run))
                stores = ["memory", "redis"] if turn % 2 == 0 else ["redis", "memory"]
                for store in stores:
                    count = store == "memory" and not bridge_calls and server == args.servers[0]
                    calls = _bridge_rows(
                        server, args, keys, workdir, fake_port, run, add,
                        on_redis=store == "redis", count_calls=count,
                    )  # fmt: skip
                    bridge_calls = calls or bridge_calls
                # The ceiling once more, in a fresh process, right after the bridge's rows: the
                # ratios take the mean of the two (both are reported).
                add(_ceiling(server, f"(a) bare Quart JSON, {server}, again after (c)", run))
        rows += [_mean(same) for same in measured.values()]
    return rows + [{"upstream": {"bridge": bridge_calls, "snippet": snippet_calls}}]


def _mean(same: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from its rounds: rates and latencies averaged, counts summed, each round kept."""
    row = dict(same[0])
    for key in ("rps", "p50_ms", "p99_ms"):
        row[key] = sum(r[key] for r in same) / len(same)
    for key in ("requests", "errors"):
        row[key] = sum(r[key] for r in same)
    row["rounds_rps"] = [r["rps"] for r in same]
    if "redis_commands_per_request" in row:
        per = sum(r["redis_commands_per_request"] for r in same) / len(same)
        row["redis_commands_per_request"] = round(per, 2)
    return row


def _bridge_rows(
    server: str,
    args: argparse.Namespace,
    keys: Secrets,
    workdir: Path,
    fake_port: int,
    run: dict[str, Any],
    add: Any,
    *,
    on_redis: bool,
    count_calls: bool = False,
) -> dict[str, Any] | None:
    """The bridge's hot and refresh rows under ``server``: (c) on the memory store, or (d) on a
    redis-server of their own, with the Redis commands per token request counted by Redis.
    With ``count_calls``, the upstream calls per 1,000 token requests too (returned)."""
    with ExitStack() as held:
        redis_server = held.enter_context(RedisServer(workdir)) if on_redis else None
        port = free_port()
        store_url = redis_server.url if redis_server is not None else "memory://"
        config = write_bridge_config(workdir, port, fake_port, server, store_url=store_url)
        cookies = site_cookies(config, keys, args.concurrency)
        url = f"http://127.0.0.1:{port}/request_tokens"
        name = f"bridge-redis-{server}" if on_redis else f"bridge-{server}"
        with bridge_process(name, server, port, config, keys):
            for mode, label in (("tokens", "hot path"), ("refresh", "refresh path")):
                if redis_server is None:
                    add(
                        _row(
                            f"(c) bridge {label}, {server}",
                            load(url, mode=mode, cookies=cookies, **run),
                            server,
                        )
                    )
                    continue
                redis_server.reset()
                result = load(url, mode=mode, cookies=cookies, **run)
                per = redis_server.commands() / (result["requests"] + result["warmup_requests"])
                row = _row(
                    f"(d) bridge {label} on Redis, {server}",
                    result,
                    f"{server}; {per:.1f} Redis commands per request",
                )
                row["redis_commands_per_request"] = round(per, 2)
                add(row)
            if not count_calls:
                return None
            calls = site_cookies(config, keys, CALLS_SESSIONS, prefix="calls")
            return _upstream_calls(f"http://127.0.0.1:{fake_port}", port, calls, CALLS_SESSIONS)


def _ceiling(server: str, name: str, run: dict[str, Any]) -> dict[str, Any]:
    """The bare Quart endpoint under ``server``, in a fresh process."""
    port = free_port()
    with ceiling_process(f"ceiling-{server}", server, port):
        return _row(name, load(f"http://127.0.0.1:{port}/json", **run), server)


def _upstream_calls(
    fake: str, port: int, cookies: list[str] | None, sessions: int
) -> dict[str, Any]:
    """Count logins at the stand-in for exactly 1,000 token requests from ``sessions`` clients."""
    before = get_json(f"{fake}/_fake/stats")
    mode = "plain" if cookies is None else "tokens"
    # The generator's warm-up is one request per client; the rest make up the 1,000.
    result = load(
        f"http://127.0.0.1:{port}/request_tokens",
        mode=mode,
        concurrency=sessions,
        duration=300,
        requests=CALLS_REQUESTS - sessions,
        cookies=cookies,
    )
    require_all_200("upstream calls per 1,000 token requests", result)
    after = get_json(f"{fake}/_fake/stats")
    calls = (
        after["login_calls"]
        - before["login_calls"]
        + after["refresh_calls"]
        - before["refresh_calls"]
    )
    total = result["requests"] + result["warmup_requests"]
    return {
        "requests": total,
        "sessions": sessions,
        "upstream_calls": calls,
        "errors": result["errors"],
    }


def memory(sizes: tuple[int, ...], log: Any) -> list[dict[str, Any]]:
    """Memory per idle session from outside: the memory store at each size, then Redis."""
    out: list[dict[str, Any]] = []
    if not sizes:
        return out
    for args in (
        [",".join(str(n) for n in sizes)],
        [str(min(min(sizes), REDIS_MEMORY_SIZE)), "--redis"],
    ):
        warmup = str(min(1000, min(sizes)))
        done = subprocess.run(
            [PYTHON, str(BENCH / "sessions_outside.py"), "--warmup", warmup, "--sessions", *args],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode != 0:
            raise NotAllOK(f"memory per session: {done.stderr[-1000:]}")
        result = json.loads(done.stdout)
        for point in result["checkpoints"]:
            out.append({"store": result["store"], **point})
            log(out[-1])
    return out


def ratios(
    rows: list[dict[str, Any]],
    upstream: dict[str, Any],
    mem: list[dict[str, Any]],
    servers: list[str],
) -> list[tuple[str, str, str, bool]]:
    by_name = {r["name"]: r for r in rows}
    snippet = by_name["(b) documented Flask snippet, gunicorn"]
    checks: list[tuple[str, str, str, bool]] = []

    def share(name: str, of: dict[str, Any], wanted: float, what: str) -> None:
        row = by_name[name]
        got = row["rps"] / of["rps"]
        checks.append(
            (
                what,
                f">= {wanted:.2f}",
                f"{got:.2f} ({row['rps']:,.0f} / {of['rps']:,.0f} req/s)",
                got >= wanted,
            )
        )

    def p99(name: str, of: dict[str, Any], wanted: float, what: str) -> None:
        row = by_name[name]
        got = row["p99_ms"] / of["p99_ms"]
        checks.append(
            (
                what,
                f"<= {wanted:.1f}",
                f"{got:.2f} ({row['p99_ms']:.1f} / {of['p99_ms']:.1f} ms)",
                got <= wanted,
            )
        )

    # The ceiling (issue 23): the fastest one-worker bare Quart among the servers of the run,
    # each server's two readings averaged; every server's bridge is held to that one.
    means = {}
    for server in servers:
        before = by_name[f"(a) bare Quart JSON, {server}"]
        after = by_name[f"(a) bare Quart JSON, {server}, again after (c)"]
        means[server] = {
            "rps": (before["rps"] + after["rps"]) / 2,
            "p99_ms": (before["p99_ms"] + after["p99_ms"]) / 2,
        }
    fastest = max(means, key=lambda server: means[server]["rps"])
    ceiling = means[fastest]
    of = f"the fastest bare Quart: {fastest}, mean of both rows"
    for server in servers:
        hot, refresh = f"(c) bridge hot path, {server}", f"(c) bridge refresh path, {server}"
        share(hot, ceiling, 0.60, f"hot path, {server} / ceiling ({of}; stretch 0.75)")
        share(refresh, ceiling, 0.50, f"refresh path, {server} / ceiling ({of})")
        p99(hot, ceiling, 1.5, f"hot path p99, {server} / ceiling p99 ({of})")
        share(hot, snippet, 30, f"hot path / Flask snippet ({server})")
        redis_hot = f"(d) bridge hot path on Redis, {server}"
        share(redis_hot, by_name[hot], 0.85, f"Redis hot path / memory store hot path ({server})")
        share(
            f"(d) bridge refresh path on Redis, {server}",
            by_name[refresh],
            0.85,
            f"Redis refresh path / memory store refresh path ({server})",
        )
        p99(redis_hot, ceiling, 3.0, f"Redis hot path p99, {server} / ceiling p99 ({of})")
        for row in (redis_hot, f"(d) bridge refresh path on Redis, {server}"):
            commands = by_name[row]["redis_commands_per_request"]
            checks.append(
                (f"Redis commands per request: {row}", "<= 4", f"{commands:.1f}", commands <= 4)
            )
    bridge = upstream["bridge"]
    per_session = bridge["upstream_calls"] / bridge["sessions"]
    checks.append(
        (
            "upstream calls per session per token lifetime",
            "<= 1",
            f"{per_session:.2f} ({bridge['upstream_calls']} calls for "
            f"{bridge['requests']} requests from {bridge['sessions']} sessions; "
            f"snippet: {upstream['snippet']['upstream_calls']})",
            per_session <= 1,
        )
    )
    for entry in mem:
        got = entry["rss_bytes_per_session"]
        checks.append(
            (
                f"serving process RSS per idle session, {entry['sessions']:,} sessions "
                f"({entry['store']} store)",
                f"<= {SESSION_BUDGET} B",
                f"{got:,} B",
                got <= SESSION_BUDGET,
            )
        )
        if "redis_bytes_per_session" in entry:
            got = entry["redis_bytes_per_session"]
            checks.append(
                (
                    f"Redis used_memory per idle session, {entry['sessions']:,} sessions",
                    f"<= {SESSION_BUDGET} B",
                    f"{got:,} B",
                    got <= SESSION_BUDGET,
                )
            )
    return checks


def markdown(
    rows: list[dict[str, Any]],
    upstream: dict[str, Any],
    checks: list[tuple[str, str, str, bool]],
    meta: dict[str, Any],
) -> str:
    lines = [
        f"Run {meta['date']} at commit `{meta['commit']}` on {meta['machine']}; "
        f"{meta['concurrency']} concurrent "
        f"clients, {meta['duration']:g} s per row, each server's rows in {meta['rounds']} "
        "round(s) side by side, the memory store's and Redis's in turn (a row is the mean of "
        "its rounds); stand-in Sentifyd with "
        f"{UPSTREAM_LATENCY * 1000:.0f} ms latency; {LIMITS_NOTE}; every answer 200.",
        "",
        "| Scenario | req/s | each round | p50 ms | p99 ms | requests | errors |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        each = ", ".join(f"{rps:,.0f}" for rps in r.get("rounds_rps", ()))
        lines.append(
            f"| {r['name']} | {r['rps']:,.0f} | {each} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['requests']:,} | {r['errors']} |"
        )
    redis_rows = [r for r in rows if "redis_commands_per_request" in r]
    if redis_rows:
        lines += [
            "",
            "Redis commands per token request (INFO commandstats, scripts' own "
            "commands included): "
            + "; ".join(
                f"{r['name'][4:]}: {r['redis_commands_per_request']:.1f}" for r in redis_rows
            )
            + ".",
        ]
    lines += [
        "",
        "| Upstream calls per 1,000 token requests | requests | sessions | calls |",
        "|---|---:|---:|---:|",
    ]
    for name, u in (("bridge", upstream["bridge"]), ("Flask snippet", upstream["snippet"])):
        lines.append(f"| {name} | {u['requests']:,} | {u['sessions']} | {u['upstream_calls']:,} |")
    lines += ["", "| Target | wanted | this run | met |", "|---|---|---|---|"]
    for name, wanted, got, ok in checks:
        lines.append(f"| {name} | {wanted} | {got} | {'yes' if ok else '**no**'} |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if not r["name"].startswith("load generator")]
    names = [r["name"].replace(", ", "\n", 1) for r in shown]
    colors = [
        "#9ca3af"
        if n.startswith("(a)")
        else "#f59e0b"
        if n.startswith("(b)")
        else "#10b981"
        if n.startswith("(d)")
        else "#4f46e5"
        for n in names
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90)
    bars = left.barh(names, [r["rps"] for r in shown], color=colors)
    left.bar_label(bars, labels=[f"{r['rps']:,.0f}" for r in shown], fontsize=7, padding=2)
    left.margins(x=0.12)
    left.set_xlabel("requests per second (higher is better)")
    left.invert_yaxis()
    y = range(len(shown))
    right.barh(
        [i - 0.2 for i in y],
        [r["p50_ms"] for r in shown],
        height=0.4,
        color=colors,
        alpha=0.55,
        label="p50",
    )
    right.barh(
        [i + 0.2 for i in y], [r["p99_ms"] for r in shown], height=0.4, color=colors, label="p99"
    )
    right.set_xscale("log")
    right.set_yticks(list(y), [""] * len(shown))
    right.invert_yaxis()
    right.set_xlabel("latency, ms, log scale (p50 light, p99 dark; lower is better)")
    for ax in (left, right):
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        "sentifyd-bridge vs. the documented Flask snippet and the Quart ceiling "
        "(50 concurrent clients, loopback)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, pil_kwargs={"optimize": True})
    plt.close(fig)


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="times each server's block of rows is run (each row reports the mean)",
    )
    parser.add_argument(
        "--servers",
        default="granian,hypercorn,uvicorn",
        help="ASGI servers to compare (granian, hypercorn, uvicorn, uvicorn-h11)",
    )
    parser.add_argument(
        "--memory",
        default=",".join(str(n) for n in MEMORY_SIZES),
        help="session counts for the memory-from-outside rows ('' to skip)",
    )
    parser.add_argument("--out", default=str(RESULTS / "latest"), help="results path prefix")
    args = parser.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    if not 0 < args.duration <= 600 or not 0 < args.concurrency <= 1000 or args.rounds < 1:
        parser.error("duration must be in (0, 600] s, concurrency in (0, 1000], rounds >= 1")

    def log(item: Any) -> None:
        print(json.dumps(item), file=sys.stderr, flush=True)

    keys = Secrets()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        out = throughput(args, keys, workdir, log)
    except NotAllOK as exc:
        print(f"not reported: {exc}", file=sys.stderr)
        return 1
    upstream = out.pop()["upstream"]
    sizes = tuple(int(n) for n in args.memory.split(",") if n)
    try:
        mem = memory(sizes, log)
    except NotAllOK as exc:
        print(f"not reported: {exc}", file=sys.stderr)
        return 1
    meta = {
        "date": started,
        "concurrency": args.concurrency,
        "duration": args.duration,
        "rounds": args.rounds,
        "commit": code_commit(),
        "machine": _machine(),
        "servers": args.servers,
        "gunicorn_workers": GUNICORN_WORKERS,
        "limits": LIMITS,
    }
    checks = ratios(out, upstream, mem, args.servers)
    text = markdown(out, upstream, checks, meta)
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".md").write_text(text)
    prefix.with_suffix(".json").write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": out,
                "upstream": upstream,
                "memory": mem,
                "targets": [
                    dict(zip(("target", "wanted", "got", "met"), c, strict=True)) for c in checks
                ],
            },
            indent=2,
        )
        + "\n"
    )
    chart(out, prefix.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
