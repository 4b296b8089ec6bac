"""Serve the bridge under ``server.base_path`` (e.g. ``/avatar``), on canonical paths only.

An ASGI middleware in front of the Quart app. It refuses, before any route is matched:

- a path that is not canonical: an encoded ``/``, ``\\``, ``%`` or unreserved character
  (``%2F``, ``%5C``, ``%252e``, ``%2e``, ``%61``), backslashes, ``//``, ``.`` or ``..``
  segments, control characters: 400 ``bad_path``. A proxy and the bridge could otherwise
  disagree on where such a path leads (the proxy routes on its normalised form, the app on
  another);
- a path outside ``base_path`` (compared case-sensitively, on a segment boundary, so
  ``/AVATAR/`` and ``/avatars`` are outside ``/avatar``): 404 ``not_found``.

``base_path`` itself redirects to ``base_path + "/"``, where the avatar page is.

The ASGI ``root_path`` convention: the app receives ``root_path = base_path`` and the full path
(the ASGI spec's form, which Quart expects), so ``url_for`` renders URLs under the base path
and Quart strips the prefix exactly once. A server that already sets ``root_path`` to the base
path (``hypercorn --root-path /avatar``) is fine; any other ``root_path`` is a misconfiguration
and answers 404. A server that strips ``root_path`` from ``path`` itself (against the spec) is
not supported.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart import Quart

from bridge.settings.schema import ServerSettings
from bridge.web.proxy import HTTPMiddleware, ProxyHeaders

log = logging.getLogger("bridge.mount")


_PERCENT = re.compile(r"%(?P<hex>[0-9A-Fa-f]{2})?")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _refused_encoding(raw: str) -> bool:
    """Return True if ``raw`` percent-encodes what must never be encoded in a bridge path.

    Refused: ``/`` and ``\\`` (a proxy would see one segment, the app two), ``%`` (double
    encoding), control characters, a malformed escape, and unreserved characters (letters,
    digits, ``-._~``), which RFC 3986 says are never encoded, so ``%61dmin`` cannot slip past a
    proxy rule written for ``admin``. Other escapes (``%40``, ``%20``, UTF-8) stay allowed: an
    id in a path may need them.
    """
    for match in _PERCENT.finditer(raw):
        code = match.group("hex")
        if code is None:
            return True
        char = chr(int(code, 16))
        if char in _UNRESERVED or char in "/\\%" or ord(char) < 0x20 or ord(char) == 0x7F:
            return True
    return False


def _structure_problem(text: str) -> str | None:
    if not text.startswith("/"):
        return "not_absolute"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return "bad_character"
    if "\\" in text:
        return "backslash"
    if "//" in text:
        return "empty_segment"
    if any(segment in (".", "..") for segment in text.split("/")):
        return "dot_segment"
    return None


# A path of plain segments (unreserved characters only, none "." or ".."): canonical as it
# stands, so the checks below would all pass; most requests are such paths.
_PLAIN_PATH = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)*/?")


def path_problem(path: str, raw_path: bytes | None = None) -> str | None:
    """Return why a request path is not canonical, or None.

    ``path`` is the percent-decoded path; ``raw_path`` (when the server gives it) is the path
    as the client sent it. Both are checked, so an encoded ``..`` or ``/`` is caught either way.
    """
    if path and _PLAIN_PATH.fullmatch(path) and (raw_path is None or raw_path == path.encode()):
        return None
    if raw_path is not None:
        raw = raw_path.decode("latin-1")
        if any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in raw):
            return "bad_character"  # a request line carries ASCII only; anything else is encoded
        if _refused_encoding(raw):
            return "encoded"
        problem = _structure_problem(raw)
        if problem:
            return problem
    elif _refused_encoding(path):
        return "encoded"  # no raw_path: a server that did not decode, or a test client
    return _structure_problem(path)


class Mount(HTTPMiddleware):
    """Route only canonical paths under ``base_path`` to the app, with ``root_path`` set."""

    async def handle(
        self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        path: str = scope.get("path", "")
        problem = path_problem(path, scope.get("raw_path"))
        if problem is not None:
            log.info("path refused", extra={"fields": {"reason": problem}})
            await _refuse(scope, send, 400, "bad_path", "The path is not in canonical form.")
            return
        root = scope.get("root_path", "")
        if root not in ("", self.prefix):
            log.warning(
                "root_path differs from server.base_path", extra={"fields": {"reason": "root"}}
            )
            await _refuse(scope, send, 404, "not_found", "There is nothing here.")
            return
        if self.prefix:
            if path == self.prefix and scope["type"] == "http":
                await _redirect(send, self.prefix + "/")
                return
            if not path.startswith(self.prefix + "/"):
                await _refuse(scope, send, 404, "not_found", "There is nothing here.")
                return
        scope = dict(scope)
        scope["root_path"] = self.prefix
        await self.app(scope, receive, send)


async def _refuse(scope: Any, send: ASGISendCallable, status: int, code: str, message: str) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    body = json.dumps({"error": code, "message": message}, separators=(",", ":")).encode()
    await _send(send, status, body, [(b"content-type", b"application/json")])


async def _redirect(send: ASGISendCallable, location: str) -> None:
    # A path only: the browser resolves it against the URL it asked for, so no request header
    # (Host, X-Forwarded-*) ever picks where a redirect goes.
    await _send(send, 308, b"", [(b"location", location.encode("ascii"))])


async def _send(
    send: ASGISendCallable, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = headers + [
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def install(app: Quart, server: ServerSettings, inner: Any = None) -> None:
    """Wrap ``app``'s ASGI entry (or ``inner``, an ASGI app in front of it) in the proxy-header
    and base-path middleware.

    Wrapping ``app.asgi_app`` (not the app) keeps ``app`` a Quart instance, and Quart's test
    client goes through the same middleware as a real server.
    """
    mounted = Mount(inner if inner is not None else app.asgi_app, server.base_path)
    app.asgi_app = ProxyHeaders(  # type: ignore[method-assign]
        mounted, server.trusted_proxies, server.base_path
    )
