"""The hot path (memory store, cached tokens) with traces off, on (100% sampled) and on at 1%.

    .venv/bin/python bench/tracing_ab.py --duration 5 --rounds 4 [--baseline DIR]

``sentifyd-bridge serve`` runs as users run it. "on" sets ``OTEL_EXPORTER_OTLP_ENDPOINT`` to an
OTLP/HTTP sink in this process and ``OTEL_TRACES_SAMPLER=always_on``; "on 1%" samples
``traceidratio`` 0.01; "off" sets no ``OTEL_*``; with ``--baseline DIR`` a checkout of the commit
before tracing runs too, traces off. Rounds rotate the variants' order (so the machine's drift falls
on each alike); prints each run's req/s and the bridge's CPU per request, the means and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from common import (
    BIN,
    Proc,
    Secrets,
    fake_sentifyd,
    free_port,
    rps_and_cpu,
    site_cookies,
    write_bridge_config,
)


class Sink(BaseHTTPRequestHandler):
    """Accept OTLP/HTTP exports and count their bytes (no decoding: a collector's part)."""

    received = 0

    def do_POST(self) -> None:  # noqa: N802
        Sink.received += len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def run_variant(
    workdir: Path, fake_port: int, keys: Secrets, otel: dict[str, str], args: argparse.Namespace
) -> tuple[float, float]:
    port = free_port()
    config = write_bridge_config(workdir, port, fake_port, "granian")
    cookies = site_cookies(config, keys, args.concurrency)
    command = [str(BIN / "sentifyd-bridge"), "serve", "--config", str(config), "--port", str(port)]
    with Proc("bridge", command, port, env={**keys.env(), **otel}) as bridge:
        return rps_and_cpu(
            "bridge", bridge, port, cookies, concurrency=args.concurrency, duration=args.duration
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run this checkout (a git worktree of the commit before "
        "tracing) with traces off: what 'off' costs",
    )
    parser.add_argument(
        "--variants",
        default="off,on,on 1%,baseline",
        help="which of off, on, on 1%%, baseline to run (comma-separated)",
    )
    args = parser.parse_args(argv)
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]  # "off" is off
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    variants = {
        "off": {},
        "on": {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
            "OTEL_TRACES_SAMPLER": "always_on",
        },
        "on 1%": {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        },
    }
    if args.baseline:
        variants["baseline"] = {"PYTHONPATH": str(args.baseline.resolve())}
    variants = {name: variants[name] for name in args.variants.split(",") if name in variants}
    keys = Secrets()
    runs: dict[str, list[float]] = {name: [] for name in variants}
    cpu_us: dict[str, list[float]] = {name: [] for name in variants}
    fake_port = free_port()
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_sentifyd(fake_port, keys, latency=0.05, token_ttl=3600),
    ):
        for round_ in range(args.rounds):
            order = list(variants)
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            for name in order:  # each variant first in some round
                otel = variants[name]
                rps, us = run_variant(Path(tmp), fake_port, keys, otel, args)
                runs[name].append(rps)
                cpu_us[name].append(us)
                print(
                    f"round {round_ + 1}: traces {name}: {rps:,.0f} req/s, {us:,.0f} us CPU "
                    "per request",
                    flush=True,
                )
    sink.shutdown()
    means = {name: statistics.mean(values) for name, values in runs.items()}
    cpu_means = {name: statistics.mean(values) for name, values in cpu_us.items()}
    print(
        json.dumps(
            {
                "runs": runs,
                "cpu_us": cpu_us,
                "means": means,
                "cpu_us_means": cpu_means,
                "exported_bytes": Sink.received,
            },
            indent=2,
        )
    )
    for name, against in (("on", "off"), ("on 1%", "off"), ("off", "baseline")):
        if name in means and against in means:
            print(
                f"traces {name} / {against}: req/s {means[name] / means[against]:.2f}, "
                f"CPU per request {cpu_means[name] / cpu_means[against]:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
