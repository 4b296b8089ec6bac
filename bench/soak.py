"""The soak: a fixed request rate for a set time against the bridge and the stand-in Sentifyd,
on loopback, bounded in time and rate; zero errors and flat memory expected.

    .venv/bin/python bench/soak.py                 # 10 minutes, 200 requests/s
    .venv/bin/python bench/soak.py --minutes 3

The bridge runs as users run it (``sentifyd-bridge serve --config FILE``, the memory store);
the stand-in Sentifyd answers after 50 ms and its tokens live 60 s, so every session's tokens
are renewed upstream many times during a 10-minute soak. Two load generator processes share
the rate: 50 sessions on the hot path (first requests: a new handle chain each, tokens from
the cache) and 50 sessions on the refresh path (each rotating its own chain). The bridge's RSS
is sampled every few seconds; the report gives requests, errors, upstream calls and the RSS
after warm-up (the first fifth of the run, at most 60 s), in the middle and at the end, with
the drift against the stated margin (growth under 10% after warm-up). The bridge runs with the
limits in ``common.LIMITS``; a soak in which any answer was not a 200 is not reported (exit 1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    BIN,
    LIMITS,
    LIMITS_NOTE,
    PYTHON,
    RESULTS,
    NotAllOK,
    Proc,
    Secrets,
    fake_sentifyd,
    free_port,
    get_json,
    require_all_200,
    rss_kb,
    site_cookies,
    write_bridge_config,
)

MARGIN = 0.10  # allowed RSS growth after warm-up
SAMPLE_EVERY = 5.0
TOKEN_TTL = 60


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="total requests per second")
    parser.add_argument("--server", default="uvicorn", choices=("uvicorn", "hypercorn"))
    parser.add_argument("--out", default=str(RESULTS / "soak"), help="results path prefix")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 120 or not 0 < args.rate <= 5000:
        parser.error("--minutes must be in (0, 120] and --rate in (0, 5000]")
    seconds = args.minutes * 60
    warmup = min(60.0, seconds / 5)

    keys = Secrets()
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    fake_port, port = free_port(), free_port()
    config = write_bridge_config(workdir, port, fake_port, args.server)
    hot_cookies = site_cookies(config, keys, 50, prefix="hot")
    refresh_cookies = site_cookies(config, keys, 50, prefix="refresh")
    url = f"http://127.0.0.1:{port}/request_tokens"
    samples: list[tuple[float, int]] = []
    results: list[dict[str, Any]] = []

    with (
        fake_sentifyd(fake_port, keys, latency=0.05, token_ttl=TOKEN_TTL),
        Proc(
            "bridge",
            [str(BIN / "sentifyd-bridge"), "serve", "--config", str(config)],
            port,
            env=keys.env(),
        ) as bridge,
    ):
        before = get_json(f"http://127.0.0.1:{fake_port}/_fake/stats")
        generators = []
        files = []
        for mode, cookies in (("tokens", hot_cookies), ("refresh", refresh_cookies)):
            cookie_file = workdir / f"cookies-{mode}.json"
            cookie_file.write_text(json.dumps(cookies))
            out = tempfile.TemporaryFile()
            files.append(out)
            generators.append(
                subprocess.Popen(
                    [
                        PYTHON,
                        str(BENCH / "loadgen.py"),
                        url,
                        "--mode",
                        mode,
                        "--concurrency",
                        "50",
                        "--duration",
                        str(seconds),
                        "--rate",
                        str(args.rate / 2),
                        "--cookies",
                        str(cookie_file),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        started = time.monotonic()
        deadline = started + seconds + 120  # the generators stop themselves at `seconds`
        while any(g.poll() is None for g in generators):
            if time.monotonic() > deadline:
                for g in generators:
                    g.kill()
                raise RuntimeError("load generators overran their time")
            samples.append((time.monotonic() - started, rss_kb(bridge.pid)))
            time.sleep(SAMPLE_EVERY)  # the sampling period, bounded by the deadline above
        samples.append((time.monotonic() - started, rss_kb(bridge.pid)))
        after = get_json(f"http://127.0.0.1:{fake_port}/_fake/stats")
        for out in files:
            out.seek(0)
            text = out.read().decode()
            try:
                results.append(json.loads(text.strip().splitlines()[-1]))
            except (ValueError, IndexError) as exc:
                raise RuntimeError(f"load generator failed: {text[-2000:]}") from exc

    try:
        for mode, result in zip(("hot path", "refresh path"), results, strict=True):
            require_all_200(mode, result)
    except NotAllOK as exc:
        print(f"not reported: {exc}", file=sys.stderr)
        return 1
    warm = next(kb for t, kb in samples if t >= warmup)
    middle = min(samples, key=lambda s: abs(s[0] - seconds / 2))[1]
    end = samples[-1][1]
    peak = max(kb for t, kb in samples if t >= warmup)
    drift = (end - warm) / warm
    requests = sum(r["requests"] for r in results)
    errors = sum(r["errors"] for r in results)
    upstream = (
        after["login_calls"]
        - before["login_calls"]
        + after["refresh_calls"]
        - before["refresh_calls"]
    )
    ok = errors == 0 and drift < MARGIN
    lines = [
        f"Soak {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.minutes:g} min at "
        f"{args.rate:g} requests/s ({args.server}), 100 sessions (50 hot path, 50 refresh "
        f"path), stand-in Sentifyd with 50 ms latency and {TOKEN_TTL} s tokens; {LIMITS_NOTE}.",
        "",
        "| Measure | value |",
        "|---|---:|",
        f"| requests (hot path + refresh path) | {requests:,} "
        f"({results[0]['requests']:,} + {results[1]['requests']:,}) |",
        f"| achieved rate | {requests / seconds:,.1f} req/s |",
        f"| errors | {errors} |",
        f"| p50 / p99 latency, hot path | {results[0]['p50_ms']:.1f} / "
        f"{results[0]['p99_ms']:.1f} ms |",
        f"| p50 / p99 latency, refresh path | {results[1]['p50_ms']:.1f} / "
        f"{results[1]['p99_ms']:.1f} ms |",
        f"| upstream calls (token renewals) | {upstream:,} |",
        f"| RSS after warm-up ({warmup:.0f} s) | {warm / 1024:.1f} MiB |",
        f"| RSS in the middle | {middle / 1024:.1f} MiB |",
        f"| RSS at the end | {end / 1024:.1f} MiB |",
        f"| RSS peak after warm-up | {peak / 1024:.1f} MiB |",
        f"| drift (end vs. after warm-up) | {drift * 100:+.1f}% (margin: < {MARGIN * 100:.0f}%) |",
        f"| verdict | {'pass' if ok else '**fail**'} |",
    ]
    text = "\n".join(lines) + "\n"
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".md").write_text(text)
    prefix.with_suffix(".json").write_text(
        json.dumps(
            {
                "minutes": args.minutes,
                "rate": args.rate,
                "server": args.server,
                "limits": LIMITS,
                "results": results,
                "upstream_calls": upstream,
                "rss_samples_kb": samples,
                "drift": drift,
                "pass": ok,
            },
            indent=1,
        )
        + "\n"
    )
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
