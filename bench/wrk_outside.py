"""Page views from outside, with wrk: ``sentifyd-bridge serve`` against the bare-Quart ceilings
and the documented Flask snippet, in one run.

    .venv/bin/python bench/wrk_outside.py --duration 10 --rounds 2   # ~3 min

Each in its own process on 127.0.0.1, the stand-in Sentifyd at 50 ms latency behind them:

- **the ceilings**: a bare Quart JSON endpoint (``bench/apps.py ceiling``), one worker, under
  granian, hypercorn and uvicorn; the fastest server's mean is the ceiling;
- **the bridge** as ``sentifyd-bridge serve`` runs it (the CLI, its default server), on the
  memory store and on a redis-server of the run's own, every ``[limits]`` key off, with
  ``--sessions`` (2,000) sessions signed in first: one token request each, each a distinct
  site user with the site's login cookie;
- **the documented Flask snippet** under gunicorn (5 sync workers), once (at least 5 s).

wrk (one thread, 50 connections, ``--latency``) drives each. The bridge's requests come from
``bench/wrk_pageviews.lua``: each a page view of the next of the signed-in sessions in turn (a
GET of ``/request_tokens`` with the site's cookie and the bridge's, answered from the
session's cached tokens with a new handle chain); the ceilings and the snippet get plain GETs.
The ceilings and the two stores' bridge rows run in turn, ``--rounds`` times, the order
reversed each round; a row is the mean of its rounds. wrk counts answers other than 2xx/3xx and
socket errors: a run with any is refused (nothing is reported). Redis counts its own commands
per request (``INFO commandstats``).

Writes ``bench/results/wrk_outside.{json,md}`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import common
from common import (
    BENCH,
    BIN,
    LIMITS_TOML,
    RESULTS,
    NotAllOK,
    Secrets,
    ceiling_process,
    code_commit,
    fake_sentifyd,
    first_token_requests,
    free_port,
    site_cookies,
    snippet_process,
    write_bridge_config,
)

UPSTREAM_LATENCY = 0.05
TOKEN_TTL = 3600
CONNECTIONS = 50
SERVERS = ("granian", "hypercorn", "uvicorn")
LIMITS_OFF = (
    "".join(
        f'{key} = "off"\n'
        for key in (
            "per_session",
            "new_chains_per_session",
            "new_sessions_per_user",
            "per_ip",
            "login_per_ip",
            "upstream_logins_per_avatar",
        )
    )
    + "sessions_per_user = 0\n"
)
SIGN_IN_CONNECTIONS = 50


def wrk(url: str, duration: float, *, script: Path | None = None, args: list[str] | None = None
        ) -> dict[str, Any]:  # fmt: skip
    """One wrk run (1 thread, CONNECTIONS connections): its req/s, latency and counts."""
    command = [shutil.which("wrk") or "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s",
               "--latency", "--timeout", "10s"]  # fmt: skip
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if args:
        command += ["--", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr[-2000:]}")
    return parse_wrk(done.stdout)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> dict[str, Any]:
    """wrk's report: req/s, requests, the 50th and 99th latency percentiles in ms, answers
    other than 2xx/3xx and socket errors (what it does not print is zero)."""

    def number(pattern: str) -> float:
        match = re.search(pattern, text)
        if match is None:
            raise ValueError(f"wrk's report has no {pattern!r}:\n{text}")
        return float(match.group(1))

    def latency(percent: int) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk's report has no {percent}% latency:\n{text}")
        return round(float(match.group(1)) * _UNITS[match.group(2)], 2)

    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "requests": int(number(r"(\d+) requests in")),
        "p50_ms": latency(50),
        "p99_ms": latency(99),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


def require_clean(name: str, result: dict[str, Any]) -> dict[str, Any]:
    if result["non_2xx"] or result["socket_errors"] or not result["requests"]:
        raise NotAllOK(
            f"{name}: {result['non_2xx']} answers not 2xx/3xx, "
            f"{result['socket_errors']} socket errors, {result['requests']} requests"
        )
    return result


async def sign_in(port: int, site: list[str]) -> list[str]:
    """One token request per site cookie; return each session's ``Cookie`` value (the site's
    cookie and the bridge's). Any answer but 200 refuses the run."""
    sessions: list[str] = []
    for cookie, (status, bridge) in zip(
        site, await first_token_requests(port, site, SIGN_IN_CONNECTIONS), strict=True
    ):
        if status != "200" or bridge is None:
            raise NotAllOK(f"sign-in: answer {status}, session cookie {bridge is not None}")
        sessions.append(f"session={cookie}; {bridge}")
    return sessions


@contextmanager
def bridge_serving(store: str, workdir: Path, keys: Secrets, fake_port: int, sessions: int
                   ) -> Iterator[tuple[str, Path, common.RedisServer | None]]:  # fmt: skip
    """``sentifyd-bridge serve`` on ``store`` with every limit off and ``sessions`` signed in:
    yields its token URL, the file of the sessions' cookies and the Redis server (if any)."""
    redis_server = common.RedisServer(workdir) if store == "redis" else None
    port = free_port()
    config = write_bridge_config(
        workdir, port, fake_port, "granian",
        store_url=redis_server.url if redis_server is not None else "memory://",
    )  # fmt: skip
    text = config.read_text()
    config.write_text(text.replace("[limits]\n" + LIMITS_TOML, "[limits]\n" + LIMITS_OFF, 1))
    site = site_cookies(config, keys, sessions, prefix=f"wrk-{store}-{port}")
    serve = [str(BIN / "sentifyd-bridge"), "serve", "--config", str(config)]
    try:
        if redis_server is not None:
            redis_server.__enter__()
        with common.Proc(f"wrk-bridge-{store}", serve, port, env=keys.env()):
            signed_in = asyncio.run(sign_in(port, site))
            cookies = workdir / f"cookies-{store}-{port}.txt"
            cookies.write_text("\n".join(signed_in) + "\n")
            yield f"http://127.0.0.1:{port}/request_tokens", cookies, redis_server
    finally:
        if redis_server is not None:
            redis_server.stop()


def _settle(redis_server: common.RedisServer, timeout: float = 10.0) -> None:
    """Wait until Redis runs no more commands of the sign-in (its answers are all in, but work
    it started may still be running): page views alone are counted after this."""
    until, last = time.monotonic() + timeout, -1
    while time.monotonic() < until:
        count = redis_server.commands()
        if count == last:
            return
        last = count
        time.sleep(0.3)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    keys = Secrets()
    workdir = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    script = BENCH / "wrk_pageviews.lua"
    runs: dict[str, list[dict[str, Any]]] = {}

    def record(name: str, result: dict[str, Any]) -> None:
        runs.setdefault(name, []).append(require_clean(name, result))
        print(json.dumps({"name": name, **result}), file=sys.stderr, flush=True)

    def ceiling(server: str) -> None:
        port = free_port()
        with ceiling_process(f"wrk-ceiling-{server}", server, port):
            wrk(f"http://127.0.0.1:{port}/json", 1)  # warm-up
            record(f"bare Quart, {server}", wrk(f"http://127.0.0.1:{port}/json", args.duration))

    def bridge(store: str, fake_port: int) -> None:
        with bridge_serving(store, workdir, keys, fake_port, args.sessions) as (url, cookies, rs):
            if rs is not None:
                _settle(rs)
                rs.reset()
            result = wrk(url, args.duration, script=script, args=[str(cookies)])
            if rs is not None:
                result["redis_commands_per_request"] = round(rs.commands() / result["requests"], 2)
            record(f"bridge page views, {store} store", result)

    fake_port = free_port()
    with fake_sentifyd(fake_port, keys, latency=UPSTREAM_LATENCY, token_ttl=TOKEN_TTL):
        steps: list[tuple[str, str]] = [("ceiling", s) for s in SERVERS]
        steps += [("bridge", "memory"), ("bridge", "redis")]
        for round_ in range(args.rounds):
            for kind, what in steps if round_ % 2 == 0 else steps[::-1]:
                if kind == "ceiling":
                    ceiling(what)
                else:
                    bridge(what, fake_port)
        port = free_port()
        url = f"http://127.0.0.1:{port}/request_tokens"
        with snippet_process("wrk-flask-snippet", port, f"http://127.0.0.1:{fake_port}",
                             keys.api_key):  # fmt: skip
            # Each of its answers waits on Sentifyd, 50 at a time over 5 workers: at least 5 s,
            # after a warm-up, or a short run ends before the first answers come back.
            wrk(url, 2)
            record("documented Flask snippet, gunicorn", wrk(url, max(args.duration, 5.0)))
    return report(runs, args)


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for name, results in runs.items():
        row: dict[str, Any] = {
            "name": name,
            "rps": round(statistics.mean(r["rps"] for r in results), 1),
            "rounds_rps": [round(r["rps"]) for r in results],
            "p50_ms": round(statistics.mean(r["p50_ms"] for r in results), 2),
            "p99_ms": round(statistics.mean(r["p99_ms"] for r in results), 2),
            "requests": sum(r["requests"] for r in results),
        }
        if "redis_commands_per_request" in results[0]:
            row["redis_commands_per_request"] = round(
                statistics.mean(r["redis_commands_per_request"] for r in results), 2
            )
        rows.append(row)
    by_name = {row["name"]: row for row in rows}
    best = max(SERVERS, key=lambda s: by_name[f"bare Quart, {s}"]["rps"])
    top = by_name[f"bare Quart, {best}"]
    memory = by_name["bridge page views, memory store"]
    redis = by_name["bridge page views, redis store"]
    snippet = by_name["documented Flask snippet, gunicorn"]

    def target(what: str, wanted: str, value: float, met: bool, detail: str) -> dict[str, Any]:
        return {"target": what, "wanted": wanted, "value": round(value, 3), "met": met,
                "detail": detail}  # fmt: skip

    hot = memory["rps"] / top["rps"]
    p99 = memory["p99_ms"] / top["p99_ms"]
    times = memory["rps"] / snippet["rps"]
    share = redis["rps"] / memory["rps"]
    commands = redis["redis_commands_per_request"]
    ceiling = f"ceiling: bare Quart under {best}, {top['rps']:,.0f} req/s"
    targets = [
        target("page views / ceiling", ">= 0.60 (stretch 0.75)", hot, hot >= 0.60,
               f"{memory['rps']:,.0f} req/s; {ceiling}"),
        target("page views p99 / ceiling p99", "<= 1.5", p99, p99 <= 1.5,
               f"{memory['p99_ms']} / {top['p99_ms']} ms"),
        target("page views / Flask snippet", ">= 30", times, times >= 30,
               f"{memory['rps']:,.0f} / {snippet['rps']:,.0f} req/s"),
        target("Redis page views / memory store", ">= 0.85", share, share >= 0.85,
               f"{redis['rps']:,.0f} / {memory['rps']:,.0f} req/s"),
        target("Redis commands per page view", "<= 4", commands, commands <= 4,
               "Redis's own count, INFO commandstats"),
    ]  # fmt: skip
    return {
        "meta": {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": args.commit,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "sessions": args.sessions,
            "connections": CONNECTIONS,
            "upstream_latency_ms": UPSTREAM_LATENCY * 1000,
            "wrk": "wrk -t1 -c50 --latency; bridge requests from bench/wrk_pageviews.lua",
            "limits": "every [limits] key off",
            "server": "sentifyd-bridge serve (its default ASGI server, granian)",
        },
        "rows": rows,
        "targets": targets,
    }


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"Run {meta['when']} at commit `{meta['commit']}`: wrk from outside, {meta['connections']} "
        f"connections, {meta['duration_s']:g} s per row, {meta['rounds']} round(s) in turn (a row "
        f"is their mean); the bridge: {meta['server']}, {meta['limits']}, page views spread over "
        f"{meta['sessions']:,} signed-in sessions; stand-in Sentifyd with "
        f"{meta['upstream_latency_ms']:g} ms latency; every answer 2xx, no socket error.",
        "",
        "| Row | req/s | each round | p50 ms | p99 ms | requests |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        rounds = ", ".join(f"{r:,}" for r in row["rounds_rps"])
        extra = (
            f" ({row['redis_commands_per_request']} Redis commands per request)"
            if "redis_commands_per_request" in row
            else ""
        )
        lines.append(
            f"| {row['name']}{extra} | {row['rps']:,.0f} | {rounds} | {row['p50_ms']} | "
            f"{row['p99_ms']} | {row['requests']:,} |"
        )
    lines += ["", "| Target | wanted | this run | met |", "|---|---|---|---|"]
    for t in result["targets"]:
        met = "yes" if t["met"] else "**no**"
        lines.append(f"| {t['target']} | {t['wanted']} | {t['value']} ({t['detail']}) | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=2000, help="signed-in sessions")
    parser.add_argument("--out", default=str(RESULTS / "wrk_outside"), help="results prefix")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600 or not 0 < args.rounds <= 10:
        parser.error("--duration in (0, 600], --rounds in (0, 10]")
    if not 0 < args.sessions <= 100_000:
        parser.error("--sessions in (0, 100000]")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    args.commit = code_commit()  # the code that runs, not wherever HEAD is by the end
    try:
        result = measure(args)
    except NotAllOK as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
