"""The bridge's hot path under each ASGI server, and with the token fast path on and off.

    .venv/bin/python bench/serving_ab.py --duration 8 --rounds 3

Each round runs every variant once, in a fresh process, in the same order (so the machine's
drift and the other users of its CPU fall on every variant alike); prints each run's req/s and
the bridge's CPU per request (user + system, the steadier figure when others share the machine),
each variant's means, and the ratios of the fast path on to off under the default server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from common import (
    Secrets,
    bridge_process,
    fake_sentifyd,
    free_port,
    rps_and_cpu,
    site_cookies,
    write_bridge_config,
)


def run_variant(
    workdir: Path, fake_port: int, keys: Secrets, server: str, fast: bool, args: argparse.Namespace
) -> tuple[float, float]:
    port = free_port()
    config = write_bridge_config(workdir, port, fake_port, server)
    text = config.read_text().replace(
        "[session]", f"token_fast_path = {str(fast).lower()}\n\n[session]", 1
    )
    config.write_text(text)
    cookies = site_cookies(config, keys, args.concurrency)
    with bridge_process(f"bridge-{server}", server, port, config, keys) as bridge:
        return rps_and_cpu(
            server, bridge, port, cookies, concurrency=args.concurrency, duration=args.duration
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants", default="granian:on,granian:off,uvicorn:on,uvicorn-h11:on,hypercorn:on"
    )
    args = parser.parse_args(argv)
    variants = [(v.split(":")[0], v.split(":")[1] == "on") for v in args.variants.split(",")]
    keys = Secrets()
    names = [f"{s} fast path {'on' if f else 'off'}" for s, f in variants]
    runs: dict[str, list[float]] = {name: [] for name in names}
    cpu_us: dict[str, list[float]] = {name: [] for name in names}
    fake_port = free_port()
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_sentifyd(fake_port, keys, latency=0.05, token_ttl=3600),
    ):
        for round_ in range(args.rounds):
            for server, fast in variants:
                name = f"{server} fast path {'on' if fast else 'off'}"
                rps, us = run_variant(Path(tmp), fake_port, keys, server, fast, args)
                runs[name].append(rps)
                cpu_us[name].append(us)
                print(
                    f"round {round_ + 1}: {name}: {rps:,.0f} req/s, {us:,.0f} us CPU per request",
                    flush=True,
                )
    means = {name: statistics.mean(values) for name, values in runs.items()}
    cpu_means = {name: statistics.mean(values) for name, values in cpu_us.items()}
    print(
        json.dumps(
            {"runs": runs, "cpu_us": cpu_us, "means": means, "cpu_us_means": cpu_means}, indent=2
        )
    )
    on, off = "granian fast path on", "granian fast path off"
    if on in means and off in means:
        print(
            f"granian: fast path on / off: req/s {means[on] / means[off]:.2f}, "
            f"CPU per request {cpu_means[on] / cpu_means[off]:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
