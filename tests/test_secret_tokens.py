"""Random tokens and the token request's crypto: right values, and the GIL kept while drawn.

Under granian the server's own thread waits for the GIL while a request runs; a call that lets
the GIL go hands the interpreter to it in the middle of the request. ``bridge.secret``'s tokens
and the sealer's key derivation exist to not do that (one-shot ``hmac.digest`` and
``os.urandom`` do), and these tests fail if either comes back.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from bridge import secret
from bridge.secret import Secret
from bridge.sessions.sealing import SessionSealer, digest, open_with_handle, seal_with_handle

COOKIE = "c" * 43


def test_tokens_have_the_shapes_secrets_gives() -> None:
    handle = secret.token_urlsafe(32)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", handle)
    assert len(base64.urlsafe_b64decode(handle + "=")) == 32
    assert re.fullmatch(r"[0-9a-f]{32}", secret.token_hex(16))
    assert len(secret.token_bytes(12)) == 12
    drawn = {secret.token_hex(16) for _ in range(1000)}
    assert len(drawn) == 1000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_draws_other_values_than_its_parent() -> None:
    # Workers forked from one parent (gunicorn-style) must not hand out the same handles.
    secret.token_hex(16)  # the parent's generator is in use before the fork
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(writer, "".join(secret.token_hex(16) for _ in range(4)).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    child = os.read(reader, 4096).decode()
    os.close(reader)
    parent = "".join(secret.token_hex(16) for _ in range(4))
    assert len(child) == len(parent) == 128
    assert child != parent


@contextmanager
def _thread_waiting_for_the_gil() -> Iterator[Callable[[], int]]:
    """A busy thread that runs only when this one lets the GIL go: yields its loop count.

    With a switch interval of a second, this thread is not asked to drop the GIL while the
    measured calls run (a quarter second at most); the busy thread gets it only when one of
    them releases it, and then keeps it until this thread asks for it back.
    """
    interval = sys.getswitchinterval()
    count = [0]
    go, stop = threading.Event(), threading.Event()

    def spin() -> None:
        go.wait()
        while not stop.is_set():
            count[0] += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()  # it waits for go, without the GIL
    sys.setswitchinterval(1.0)
    try:
        go.set()  # from now on it waits for the GIL
        yield lambda: count[0]
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)


def _lets_the_gil_go(call: Callable[[], object], times: int = 20_000) -> bool:
    """Whether ``call`` released the GIL in ``times`` calls (or a quarter second of them).

    A short release hands the GIL over only now and then (the busy thread must wake up first),
    so thousands of calls: one-shot ``hmac.digest`` and ``os.urandom(12)`` are caught within a
    few hundred.
    """
    with _thread_waiting_for_the_gil() as spins:
        until = time.perf_counter() + 0.25
        for _ in range(times):
            call()
            if spins():
                return True
            if time.perf_counter() > until:
                break
        return False


def test_the_detector_sees_a_call_that_releases_the_gil() -> None:
    assert _lets_the_gil_go(lambda: time.sleep(0))


def test_the_token_requests_crypto_and_randomness_keep_the_gil() -> None:
    sealer = SessionSealer([Secret("k" * 40)])
    sealed = sealer.seal_raw(COOKIE, "sid", b"tokens" * 100)
    grace = seal_with_handle("h" * 43, "n" * 43)
    calls: dict[str, Callable[[], object]] = {
        "token_urlsafe": lambda: secret.token_urlsafe(32),
        "token_hex": lambda: secret.token_hex(16),
        "token_bytes": lambda: secret.token_bytes(12),
        "seal_raw": lambda: sealer.seal_raw(COOKIE, "sid", b"tokens" * 100),
        "open_raw": lambda: sealer.open_raw(COOKIE, "sid", sealed),
        "seal_with_handle": lambda: seal_with_handle("h" * 43, "n" * 43),
        "open_with_handle": lambda: open_with_handle("h" * 43, grace),
        "digest": lambda: digest("h" * 43),
    }
    releasing = [name for name, call in calls.items() if _lets_the_gil_go(call)]
    assert releasing == []


def test_what_the_bridge_no_longer_calls_would_be_caught() -> None:
    # The two calls replaced: were they to come back, the test above would name them.
    assert _lets_the_gil_go(lambda: hmac.digest(b"k" * 32, b"m" * 43, "sha256"))
    assert _lets_the_gil_go(lambda: os.urandom(12))
