"""Profile the bridge's hot path (or refresh path) with pyinstrument under real load.

The bridge runs in this process (uvicorn by default: a server whose whole request path runs in
Python on this process's loop; ``--server``; the memory store) with the profiler sampling it;
the stand-in Sentifyd and the load generator run in their own processes. Prints the profile
as text; ``--html FILE`` also writes pyinstrument's HTML view.

    .venv/bin/pip install pyinstrument
    .venv/bin/python bench/profile_hot.py --mode tokens --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
from pathlib import Path

from common import (
    BENCH,
    PYTHON,
    Secrets,
    fake_sentifyd,
    free_port,
    load,
    site_cookies,
    write_bridge_config,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("tokens", "refresh"), default="tokens")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--server", choices=("granian", "uvicorn", "uvicorn-h11", "hypercorn"), default="uvicorn"
    )
    parser.add_argument("--store-url", default="memory://", help="redis://... to profile Redis")
    parser.add_argument("--html")
    args = parser.parse_args(argv)

    from pyinstrument import Profiler

    from bridge.app import create_app
    from bridge.observe.logs import configure_logging
    from bridge.settings import load_settings
    from bridge.web.servers import serve

    keys = Secrets()
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    fake_port, port = free_port(), free_port()
    config = write_bridge_config(workdir, port, fake_port, args.server, store_url=args.store_url)
    cookies = site_cookies(config, keys, args.concurrency)
    os.environ.update(keys.env())
    settings = load_settings(config)
    configure_logging(settings.log_level, stream=open(os.devnull, "w"))  # noqa: SIM115
    app = create_app(settings)
    result: dict[str, object] = {}

    with fake_sentifyd(fake_port, keys, latency=0.05, token_ttl=3600):
        profiler = Profiler(interval=0.0005)

        async def serve_and_load() -> None:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            server = asyncio.ensure_future(
                serve(app, "127.0.0.1", port, settings.server, server=args.server, shutdown=stop)
            )
            await asyncio.sleep(1.0)  # let the server bind
            done = asyncio.Event()

            def drive() -> None:
                # A short unprofiled warm-up, then the measured run.
                load(
                    f"http://127.0.0.1:{port}/request_tokens",
                    mode="tokens",
                    duration=1,
                    concurrency=args.concurrency,
                    cookies=cookies,
                )
                loop.call_soon_threadsafe(profiler.start)
                result.update(
                    load(
                        f"http://127.0.0.1:{port}/request_tokens",
                        mode=args.mode,
                        duration=args.duration,
                        concurrency=args.concurrency,
                        cookies=cookies,
                    )
                )
                loop.call_soon_threadsafe(done.set)

            threading.Thread(target=drive, daemon=True).start()
            await done.wait()
            profiler.stop()
            stop.set()  # the server's own graceful shutdown
            await server

        asyncio.run(serve_and_load())
    print(result)
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    if args.html:
        Path(args.html).write_text(profiler.output_html())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    assert PYTHON
    sys.exit(main())
