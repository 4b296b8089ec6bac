"""The bridge's hot path under each ASGI server, and with the token fast path on and off.

    .venv/bin/python bench/serving_ab.py --duration 8 --rounds 3

Each round runs every variant once, in a fresh process, in the same order (so the machine's
drift and the other users of its CPU fall on every variant alike); prints each run's req/s and
each variant's mean, and the ratio of the fast path on to off under the default server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from common import (
    BENCH,
    PYTHON,
    Proc,
    Secrets,
    fake_sentifyd,
    free_port,
    load,
    require_all_200,
    site_cookies,
    write_bridge_config,
)


def run_variant(workdir: Path, fake_port: int, keys: Secrets, server: str, fast: bool,
                args: argparse.Namespace) -> float:
    port = free_port()
    config = write_bridge_config(workdir, port, fake_port, server)
    text = config.read_text().replace("[session]", f"token_fast_path = {str(fast).lower()}\n\n"
                                                   "[session]", 1)
    config.write_text(text)
    cookies = site_cookies(config, keys, args.concurrency)
    with Proc(f"bridge-{server}", [PYTHON, str(BENCH / "apps.py"), "bridge", "--server", server,
                                   "--port", str(port), "--config", str(config)], port,
              env=keys.env()):
        url = f"http://127.0.0.1:{port}/request_tokens"
        result = require_all_200(server, load(url, mode="tokens", cookies=cookies,
                                              concurrency=args.concurrency,
                                              duration=args.duration))
    return float(result["rps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="granian:on,granian:off,uvicorn:on,uvicorn-h11:on,"
                                               "hypercorn:on")
    args = parser.parse_args(argv)
    variants = [(v.split(":")[0], v.split(":")[1] == "on") for v in args.variants.split(",")]
    keys = Secrets()
    runs: dict[str, list[float]] = {f"{s} fast path {'on' if f else 'off'}": []
                                    for s, f in variants}
    fake_port = free_port()
    with tempfile.TemporaryDirectory() as tmp, \
            fake_sentifyd(fake_port, keys, latency=0.05, token_ttl=3600):
        for round_ in range(args.rounds):
            for server, fast in variants:
                name = f"{server} fast path {'on' if fast else 'off'}"
                rps = run_variant(Path(tmp), fake_port, keys, server, fast, args)
                runs[name].append(rps)
                print(f"round {round_ + 1}: {name}: {rps:,.0f} req/s", flush=True)
    means = {name: statistics.mean(values) for name, values in runs.items()}
    print(json.dumps({"runs": runs, "means": means}, indent=2))
    on, off = means.get("granian fast path on"), means.get("granian fast path off")
    if on and off:
        print(f"granian: fast path on / off = {on / off:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
