"""Helpers for the deployment tests: raw HTTP requests whose path is sent exactly as written
(httpx and browsers would normalise ``..`` and ``//`` away before sending)."""

from __future__ import annotations

import http.client
from dataclasses import dataclass, field


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
