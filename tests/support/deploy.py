"""Helpers for the deployment tests: nginx's binary, and raw HTTP requests whose path is sent
exactly as written (httpx and browsers would normalise ``..`` and ``//`` away before sending)."""

from __future__ import annotations

import http.client
import os
import shutil
from dataclasses import dataclass, field

import pytest


def nginx_binary() -> str:
    """Return nginx's path; skip only on a developer machine without it, never in CI."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("nginx is not installed, and CI must run the deployment test")
    pytest.skip("nginx is not installed (./scripts/test.sh installs it)")


@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    cookies: list[str] = field(default_factory=list)

    def json(self) -> object:
        import json

        return json.loads(self.body)


def raw_request(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> RawResponse:
    """Send one request to 127.0.0.1:``port`` with ``path`` byte for byte as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        sent = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        for name, value in sent.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return RawResponse(
            status=response.status,
            headers=response.headers,
            body=body,
            cookies=response.headers.get_all("Set-Cookie") or [],
        )
    finally:
        conn.close()
