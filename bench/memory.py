"""Memory per idle session in the memory store, measured in-process.

Method: build the bridge's real parts with ``bridge.wiring.assemble`` (MemoryStore, Lifecycle,
SessionManager, TokenBroker, SentifydClient) in this process, the upstream answered in-process
by a stub in the stand-in Sentifyd's shape (a signed JWT access token, a
refresh token, the avatar parameters). Warm up with a few hundred sessions, collect garbage,
take a baseline, then make N sessions exactly as the token endpoint does (``sessions.create``
then ``broker.issue``: one login, the sealed tokens, one handle chain, the user index, two
lifecycle events), collect garbage again and divide the growth by N. Two readings, each from a
fresh process: the process's RSS (what the OS pays, fragmentation included) and tracemalloc's
traced total (Python's own allocations only). Prints one JSON object.

    .venv/bin/python bench/memory.py --sessions 10000 --method rss
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import secrets
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Secrets, rss_kb, write_bridge_config
from joserfc import jwt
from joserfc.jwk import OctKey

WARMUP = 500


def upstream_answers(token_ttl: int) -> Callable[[], dict[str, Any]]:
    """Answer every login like the stand-in Sentifyd does (its ``wrapped_snake`` shape)."""
    from bridge.doubles.fake_sentifyd import AVATAR_PARAMS

    key = OctKey.generate_key(256)

    def answer() -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": "fake-sentifyd",
            "sub": "avtr_bench",
            "iat": now,
            "exp": now + token_ttl,
            "jti": secrets.token_urlsafe(16),
        }
        return {
            "data": {
                "access_token": jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, key),
                "refresh_token": secrets.token_urlsafe(32),
                "avatar_params": json.loads(json.dumps(AVATAR_PARAMS)),
                "token_type": "Bearer",
                "expires_in": token_ttl,
            }
        }

    return answer


async def measure(sessions: int, method: str) -> dict[str, object]:
    import httpx

    from bridge.identity import Identity
    from bridge.settings import load_settings
    from bridge.wiring import assemble

    keys = Secrets()
    config = write_bridge_config(Path(tempfile.mkdtemp(prefix="bench-mem-")), 8000, 9, "hypercorn")
    settings = load_settings(config, keys.env())
    logging.disable(logging.INFO)  # lifecycle lines would only be formatted and dropped
    answer = upstream_answers(3600)
    # Only the network is skipped (it holds nothing per session); the answer is parsed, checked
    # and cached exactly as a real one.
    upstream = httpx.MockTransport(lambda request: httpx.Response(200, json=answer()))
    bridge = assemble(settings, sentifyd_transport=upstream)
    store, manager, broker = bridge.store, bridge.sessions, bridge.broker
    avatar = settings.avatars[0]

    async def make(first: int, count: int) -> None:
        for i in range(first, first + count):
            identity = Identity(subject=f"user-{i}", method="site_cookie", claims={})
            ctx = await manager.create(identity)
            await broker.issue(ctx, avatar)
            # Let the event loop turn, as a server's does between requests. Against the
            # in-process upstream nothing above suspends, so without this the loop never runs
            # its housekeeping and each call's cancelled deadline timer (about 3.5 per session,
            # ~500 bytes) would be counted as the session's.
            await asyncio.sleep(0)

    await make(0, WARMUP)
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = rss_kb(os.getpid()) * 1024
    started = time.perf_counter()
    await make(WARMUP, sessions)
    seconds = time.perf_counter() - started
    gc.collect()
    if method == "tracemalloc":
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    else:
        after = rss_kb(os.getpid()) * 1024
    # One stored record, as its bytes (the session layer's JSON).
    async for key in store.scan(store.key("session", "*")):
        sample = await store.get_record(key)
        break
    else:
        raise RuntimeError("no session record was stored")
    if sample is None:
        raise RuntimeError("a session record vanished")
    await bridge.aclose()
    return {
        "sessions": sessions,
        "method": method,
        "bytes_per_session": round((after - before) / sessions),
        "record_json_bytes": len(sample),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--method", choices=("rss", "tracemalloc"), default="rss")
    args = parser.parse_args(argv)
    if not 0 < args.sessions <= 1_000_000:
        parser.error("--sessions must be in (0, 1000000]")
    print(json.dumps(asyncio.run(measure(args.sessions, args.method))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
