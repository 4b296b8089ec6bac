"""`sentifyd-bridge serve` as users run it: a real process on 127.0.0.1 under each ASGI server."""

from __future__ import annotations

import gc
import json
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.app import create_app
from bridge.errors import ConfigError
from bridge.web.servers import YOUNG_THRESHOLD
from support.config import make_settings
from support.live import LiveServer
from support.serve import serve_process

pytestmark = pytest.mark.integration


@pytest.fixture(params=["granian", "uvicorn", "hypercorn"])
def served(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with serve_process(tmp_path, asgi_server=request.param) as served:
        yield served


# uvicorn's httptools parser has no cap on a request head (README, "Serving").
@pytest.fixture(params=["granian", "hypercorn"])
def capped(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with serve_process(tmp_path, asgi_server=request.param) as served:
        yield served


def _raw(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before reading it all; its answer is still there
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def test_serve_answers_and_stops_gracefully_on_sigterm(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = served
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        assert response.status == 200
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    assert proc.returncode in (0, -signal.SIGTERM)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert not [line for line in stderr.splitlines() if not line.startswith("{")], stderr
    assert not [e for e in lines if e["level"] in ("warning", "error")], stderr


def test_serve_refuses_an_oversized_request_head(
    capped: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, _ = capped
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
    answer = _raw(port, huge)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
    normal = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert normal.startswith(b"HTTP/1.1 200")


def test_asgi_server_defaults_to_granian_and_refuses_unknown_names() -> None:
    assert make_settings().server.asgi_server == "granian"
    assert make_settings({"server": {"asgi_server": "hypercorn"}}).server.asgi_server == (
        "hypercorn"
    )
    with pytest.raises(ConfigError, match="server.asgi_server"):
        make_settings({"server": {"asgi_server": "gunicorn"}})


def test_serve_fits_the_garbage_collector_to_a_server_before_it_answers() -> None:
    """``serve`` freezes what start-up built (modules, the app, its parts) and raises the young
    generation's threshold (bridge.web.servers.tune_gc). Without them a busy Redis-backed
    bridge stopped every request for 50-70 ms about twice a second and spent ~40 us a request
    collecting (README, "Performance"); what a test can check is that both are in place
    before the first answer."""
    app = create_app(make_settings({}))
    before, threshold = gc.get_freeze_count(), gc.get_threshold()
    server = LiveServer(app, tune_gc=True).start()
    try:
        frozen, tuned = gc.get_freeze_count(), gc.get_threshold()
        url = f"{server.url}/healthz"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    finally:
        server.stop()
        # The process is the test run's: give it back as it was.
        gc.unfreeze()
        gc.set_threshold(*threshold)
    # The app and the modules it imported: far more than any stray object.
    assert frozen - before > 10_000
    assert tuned == (YOUNG_THRESHOLD, *threshold[1:])
    assert threshold[0] < YOUNG_THRESHOLD
