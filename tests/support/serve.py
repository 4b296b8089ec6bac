"""A bare ``python -m bridge.cli serve`` process, for the tests that look at the server itself
(its stderr, its memory, its limits on a raw socket) rather than at the bridge's answers
(those use ``support.redis.BridgeProcess``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.config import TEST_ENV, serve_config, write_bridge_toml
from support.live import free_port


@contextmanager
def serve_process(
    directory: Path, *, output: int = subprocess.PIPE, **server: Any
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``serve`` on a spare port with ``serve_config`` (``server`` merged into its ``[server]``)
    and warnings as errors; yields ``(port, process)`` once it listens, and kills it after.
    ``output`` is where its stdout and stderr go (a pipe the test may read, or DEVNULL)."""
    port = free_port()
    server = {"public_url": f"http://127.0.0.1:{port}", **server}
    config = write_bridge_toml(directory / "bridge.toml", **serve_config(server=server))
    env = {**os.environ, **TEST_ENV, "PYTHONWARNINGS": "error"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "serve", "--config", str(config), "--port", str(port)],
        env=env,
        stdout=output,
        stderr=output,
    )
    try:
        wait_listening(port, proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # bounded polling of a real external process
    raise AssertionError("serve did not start listening")
