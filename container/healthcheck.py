"""The image's HEALTHCHECK: exit 0 when this container's bridge answers GET /healthz with 200.

The port and base path come from the config the bridge reads (``BRIDGE_CONFIG``);
``BRIDGE_HEALTHCHECK_URL`` replaces the whole URL, for a bridge started with ``serve --port``.
Standard library only: importing the bridge costs about a second of CPU, on every check.
"""

from __future__ import annotations

import os
import sys
import tomllib
import urllib.request
from typing import Any

# ServerSettings' defaults (tests/test_image.py keeps them equal).
DEFAULT_PORT = 8000
DEFAULT_BASE_PATH = "/"


def health_url() -> str:
    explicit = os.environ.get("BRIDGE_HEALTHCHECK_URL")
    if explicit:
        return explicit
    server: dict[str, Any] = {}
    path = os.environ.get("BRIDGE_CONFIG")
    if path:
        with open(path, "rb") as file:
            server = tomllib.load(file).get("server", {})
    port = int(server.get("port", DEFAULT_PORT))
    base = str(server.get("base_path", DEFAULT_BASE_PATH)).rstrip("/")
    # Whatever address serve binds (0.0.0.0 in the image), loopback reaches it from inside.
    return f"http://127.0.0.1:{port}{base}/healthz"


def main() -> int:
    try:
        with urllib.request.urlopen(health_url(), timeout=3) as answer:  # noqa: S310 - our URL
            return 0 if answer.status == 200 else 1
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"sentifyd-bridge is not healthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
