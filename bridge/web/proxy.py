"""Forwarded headers, believed only from the reverse proxies named in ``server.trusted_proxies``.

An ASGI middleware. When the direct peer (``scope["client"]``) is a trusted proxy:

- ``X-Forwarded-For``: the client is the right-most address that is not itself a trusted proxy
  (every hop to its right was added by a proxy we trust; anything to its left was written by
  the client and proves nothing). ``scope["client"]`` becomes that address, so
  ``request.remote_addr`` is the real visitor for rate limits and logs.
- ``X-Forwarded-Proto`` sets ``scope["scheme"]`` and ``X-Forwarded-Host`` the ``Host`` header,
  for logs and for code that asks the request what it was. Nothing that decides security reads
  them: redirects and the ``Secure`` cookie come from ``server.public_url``.
- ``X-Forwarded-Prefix`` is honoured only when it equals ``server.base_path``: it says the proxy
  removed that prefix from the path, so it is put back (unless the path still starts with it).
  Any other prefix is ignored, so no header can move a URL the bridge renders.

From anyone else the forwarded headers (and ``Forwarded``, ``X-Real-IP``) are removed from the
request before the app sees it: ignored, never an error. ``scope["bridge.trusted_proxy"]``
tells later code which case it was, and ``scope["bridge.peer"]`` keeps the direct peer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Scopes are handled as plain dicts: the middleware adds keys ("bridge.*") the TypedDicts lack.
ASGIApp = Callable[[Any, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]

# Headers that claim something about the client or the original request. ``Forwarded`` (RFC
# 7239) and ``X-Real-IP`` are not read at all; they are dropped from untrusted peers too, so no
# later code can be tempted by them.
FORWARDED_HEADERS = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-prefix",
        b"x-forwarded-port",
        b"forwarded",
        b"x-real-ip",
    }
)
MAX_HOPS = 32  # a longer X-Forwarded-For chain is cut to its right-most hops
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")
_WS_SCHEMES = {"http": "ws", "https": "wss"}


def parse_ip(value: str) -> IPAddress | None:
    """Return ``value`` as an address (an IPv4-mapped IPv6 one as IPv4), or None."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The set of peers whose forwarded headers are believed."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __contains__(self, address: object) -> bool:
        if not self.networks:
            return False  # none configured (the default): no address to parse
        if isinstance(address, str):
            address = parse_ip(address)
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return any(address in network for network in self.networks)

    def client_from(self, chain: list[str]) -> str | None:
        """Return the right-most address of an X-Forwarded-For chain that is not a proxy of ours.

        When every hop is trusted the left-most is the client; an unreadable hop ends the walk
        (it was written by someone we do not trust), leaving the last good one, if any.
        """
        found: IPAddress | None = None
        for entry in reversed(chain[-MAX_HOPS:]):
            address = parse_ip(entry)
            if address is None:
                break
            found = address
            if address not in self:
                break
        return str(found) if found is not None else None


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Return every comma-separated value of header ``name``, in order, stripped."""
    values: list[str] = []
    for key, raw in headers:
        if key.lower() == name:
            values.extend(v.strip() for v in raw.decode("latin-1").split(","))
    return [v for v in values if v]


class HTTPMiddleware:
    """An ASGI middleware for the bridge under ``base_path``: HTTP and WebSocket scopes go
    through :meth:`handle`, any other (lifespan) straight to the app."""

    def __init__(self, app: ASGIApp, base_path: str = "/") -> None:
        self.app = app
        self.prefix = "" if base_path == "/" else base_path

    async def __call__(
        self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(
        self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        raise NotImplementedError


class ProxyHeaders(HTTPMiddleware):
    """Apply forwarded headers from trusted proxies to the ASGI scope; drop them otherwise."""

    def __init__(self, app: ASGIApp, trusted: Iterable[str], base_path: str = "/") -> None:
        super().__init__(app, base_path)
        self.trusted = TrustedProxies(trusted)

    async def handle(
        self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        await self.app(self.rewrite(dict(scope)), receive, send)

    def rewrite(self, scope: dict[str, Any]) -> dict[str, Any]:
        """Return ``scope`` as the app should see it (the caller passes a copy)."""
        client = scope.get("client")
        peer = client[0] if client else None
        trusted = peer is not None and peer in self.trusted
        scope["bridge.trusted_proxy"] = trusted
        scope["bridge.peer"] = peer
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        if not trusted:
            if any(k.lower() in FORWARDED_HEADERS for k, _ in headers):
                headers = [(k, v) for k, v in headers if k.lower() not in FORWARDED_HEADERS]
            scope["headers"] = headers
            return scope

        real = self.trusted.client_from(_values(headers, b"x-forwarded-for"))
        if real is not None:
            scope["client"] = (real, 0)

        protos = _values(headers, b"x-forwarded-proto")
        if protos and protos[-1].lower() in _WS_SCHEMES:
            proto = protos[-1].lower()
            scope["scheme"] = proto if scope["type"] == "http" else _WS_SCHEMES[proto]

        hosts = _values(headers, b"x-forwarded-host")
        if hosts and _HOST_RE.match(hosts[-1]):
            host = hosts[-1].encode("ascii")
            headers = [(k, v) for k, v in headers if k.lower() != b"host"] + [(b"host", host)]
            scope["headers"] = headers

        prefixes = _values(headers, b"x-forwarded-prefix")
        if self.prefix and prefixes and prefixes[-1].rstrip("/") == self.prefix:
            self._restore_prefix(scope)
        return scope

    def _restore_prefix(self, scope: dict[str, Any]) -> None:
        path: str = scope.get("path", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            return  # this proxy kept the path whole and sent the header as well
        scope["path"] = self.prefix + path
        raw = scope.get("raw_path")
        if isinstance(raw, bytes):
            scope["raw_path"] = self.prefix.encode("ascii") + raw
