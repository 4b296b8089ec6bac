"""A small closed-loop HTTP/1.1 load generator: N virtual clients, one keep-alive connection
and one cookie jar each, for a fixed time or a fixed number of requests.

Run in its own process (``run.py`` and ``soak.py`` start it), it prints one JSON object:
requests, errors, requests per second, p50/p99 latency. It is written on raw asyncio streams
(uvloop when installed) with pre-encoded requests, so that it is not the bottleneck: ``run.py``
measures its ceiling against a canned-response server and reports it beside the results.

Modes:
- ``plain``: GET the path, nothing else (the ceiling, the Flask snippet).
- ``tokens``: the hot path, the component's own traffic at full speed: each client is one
  session with ``TABS`` tabs; it opens them (first requests, with the client's site cookie
  and, once the bridge set it, its session cookie), then refreshes them round-robin, each
  answer's handle feeding that tab's next request; tokens come from the session's cache. (A
  session cannot open tabs forever: live tabs are never evicted, new ones beyond the cap are
  refused, as the limits say.)
- ``refresh``: as ``tokens`` once, then GET ``?refreshToken=<last handle>`` in a loop, each
  answer's new handle feeding the next request (the refresh path).

With ``--rate`` the clients share a fixed request rate (an open schedule, for the soak);
otherwise each client sends its next request as soon as the previous answer arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MAX_SAMPLES = 5_000_000  # latency samples kept (bounds memory on long runs)
MAX_BODY = 1_000_000
TABS = 8  # tabs per session in "tokens" mode


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    def error(self, what: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = what[:200]


class Client:
    """One virtual client: a keep-alive connection and its cookie jar."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        mode: str,
        site_cookie: str | None,
        bridge_cookie_name: str,
    ) -> None:
        self.host, self.port, self.path, self.mode = host, port, path, mode
        self.cookies: dict[str, str] = {}
        if site_cookie:
            self.cookies["session"] = site_cookie
        self.bridge_cookie_name = bridge_cookie_name
        self.handle: str | None = None
        self.tabs: list[str] = []  # "tokens" mode: each tab's current handle
        self.turn = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._cached: bytes | None = None

    def refreshing_tab(self) -> int | None:
        """The tab this ``tokens``-mode request refreshes (None: it opens a new one)."""
        if self.mode != "tokens" or len(self.tabs) < TABS:
            return None
        return self.turn % TABS

    def request_bytes(self) -> bytes:
        tab = self.refreshing_tab()
        if self._cached is not None and self.mode != "refresh" and tab is None:
            return self._cached
        target = self.path
        if self.mode == "refresh" and self.handle:
            target = f"{self.path}?refreshToken={self.handle}"
        elif tab is not None:
            target = f"{self.path}?refreshToken={self.tabs[tab]}"
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Accept: application/json",
            "Sec-Fetch-Site: same-origin",
        ]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # The request only changes once the bridge's cookie arrives (or, refreshing, per answer).
        if self.mode == "plain" or (tab is None and self.bridge_cookie_name in self.cookies):
            self._cached = data
        return data

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def one(self, totals: Totals, record: bool) -> None:
        """Send one request, read its answer, update cookies/handle; count it."""
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        started = time.perf_counter()
        tab = self.refreshing_tab()
        try:
            self.writer.write(self.request_bytes())
            head = await self.reader.readuntil(b"\r\n\r\n")
            status, length, close, set_cookies = _parse_head(head)
            if length is None or length > MAX_BODY:
                raise ValueError("response without a usable Content-Length")
            body = await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            totals.requests += record
            if record:
                totals.error(f"{type(exc).__name__}: {exc}")
            await self.close()
            return
        elapsed = time.perf_counter() - started
        for name, value in set_cookies:
            if value:
                self.cookies[name] = value
                self._cached = None
        if self.mode in ("refresh", "tokens") and status == 200:
            try:
                handle = json.loads(body)["tokens"]["refreshToken"]
            except (ValueError, KeyError, TypeError):
                status = -1
            else:
                if self.mode == "refresh":
                    self.handle = handle
                elif tab is None:
                    self.tabs.append(handle)
                else:
                    self.tabs[tab] = handle
                    self.turn += 1
        if close:
            await self.close()
        if not record:
            return
        totals.requests += 1
        totals.statuses[status] = totals.statuses.get(status, 0) + 1
        if status != 200:
            totals.error(f"status {status}: {body[:120]!r}")
        if len(totals.latencies) < MAX_SAMPLES:
            totals.latencies.append(elapsed)


def _parse_head(head: bytes) -> tuple[int, int | None, bool, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length: int | None = None
    close = False
    cookies: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.lower() == "close":
            close = True
        elif name == "set-cookie":
            pair = value.split(";", 1)[0]
            key, _, val = pair.partition("=")
            cookies.append((key.strip(), val.strip().strip('"')))
    return status, length, close, cookies


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def run(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    cookies: list[str | None] = [None] * args.concurrency
    if args.cookie_list:
        loaded = args.cookie_list
        cookies = [loaded[i % len(loaded)] for i in range(args.concurrency)]
    clients = [
        Client(host, port, path, args.mode, cookies[i], args.bridge_cookie)
        for i in range(args.concurrency)
    ]
    totals = Totals()
    warm = Totals()
    # Warm-up: every client once (connects; the bridge starts its session and fetches tokens).
    await asyncio.gather(*(c.one(warm, True) for c in clients))
    if warm.errors:
        return {"error": f"warm-up failed: {warm.first_error}", "warmup_errors": warm.errors}

    deadline = time.perf_counter() + args.duration
    budget = args.requests or 0
    interval = args.concurrency / args.rate if args.rate else 0.0

    sent = 0

    async def loop(client: Client, index: int) -> None:
        nonlocal sent
        next_at = time.perf_counter() + (interval * index / args.concurrency)
        while time.perf_counter() < deadline:
            if budget and sent >= budget:
                return
            sent += 1
            if interval:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
                if time.perf_counter() >= deadline:
                    return
            await client.one(totals, True)

    started = time.perf_counter()
    await asyncio.gather(*(loop(c, i) for i, c in enumerate(clients)))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in clients))
    lat = totals.latencies
    return {
        "requests": totals.requests,
        "errors": totals.errors,
        "first_error": totals.first_error,
        "statuses": {str(k): v for k, v in sorted(totals.statuses.items())},
        "seconds": round(elapsed, 3),
        "rps": round(totals.requests / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(lat, 50) * 1000, 2),
        "p99_ms": round(percentile(lat, 99) * 1000, 2),
        "warmup_requests": warm.requests,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--mode", choices=("plain", "tokens", "refresh"), default="plain")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (upper bound)")
    parser.add_argument(
        "--requests",
        type=int,
        default=0,
        help="stop after this many, warm-up excluded (0: no limit)",
    )
    parser.add_argument("--rate", type=float, default=0.0, help="total requests/s (0: closed)")
    parser.add_argument("--cookies", help="JSON list of site cookies, one per client")
    parser.add_argument("--bridge-cookie", default="sentifyd_bridge")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 3600 or not 0 < args.concurrency <= 10_000:
        parser.error("duration must be in (0, 3600] s and concurrency in (0, 10000]")
    args.cookie_list = json.loads(Path(args.cookies).read_text()) if args.cookies else None
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
