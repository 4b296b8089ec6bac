"""The token endpoint's fast path: an ASGI application in front of Quart.

The ``<sentifyd-bot>`` component's requests are nearly all the same: a GET of
``/request_tokens`` (or ``/request_tokens/<name>``) with no body, answered from the session's
cached tokens in a millisecond. Through Quart each such request costs two tasks (the handler,
and a receiver watching for the client to leave), an app and a request context, the hooks and
the dispatch. :class:`TokenFastPath` answers those GETs itself, with the same first step, view,
error answers and last step as the Quart route (``serve``, built by :func:`bridge.app.create_app`),
so the answer, its headers, the request log line and the metrics are the same; everything else
(another method, a body, an odd name, a Host werkzeug might refuse, a query with escapes, bytes
beyond ASCII in a cookie or a header's name, a lifespan event) goes to Quart untouched. It reads
the request as :class:`TokenGet`, straight from the scope, with the values Quart's request
would give for what :class:`bridge.observe.incoming.Incoming` names
(``tests/test_fastpath.py`` compares them).

It runs behind the proxy-header and base-path middleware (:mod:`bridge.web.mount`), so it sees the
scope they produced. A request still waiting (on Sentifyd, on a lock) is not cancelled when its
client leaves: the tokens it fetches are cached for the session's next request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, overload
from urllib.parse import parse_qsl

from quart import Response
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.http import parse_cookie

from bridge.observe.incoming import Incoming

if TYPE_CHECKING:
    from quart.routing import QuartRule

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]
Serve = Callable[[Incoming, str | None], Awaitable[Response]]

_TOKEN_PATH = re.compile(r"/request_tokens(?:/(?P<avatar>[A-Za-z0-9_-]{1,64}))?")
_PLAIN_HOST = re.compile(rb"(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}(?::[0-9]{1,5})?")
_BODY_HEADERS = frozenset((b"content-length", b"transfer-encoding"))
# A query without percent escapes: its parameters are the same however the bytes are decoded
# (the component sends "refreshToken=<handle>", a handle being URL-safe base64).
_PLAIN_QUERY = re.compile(rb"[A-Za-z0-9._~=&+-]*")


class TokenFastPath:
    """Answer the component's token GETs with ``serve``; hand everything else to ``app``."""

    def __init__(self, app: ASGIApp, serve: Serve) -> None:
        self.app = app
        self.serve = serve

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        avatar = self.token_get(scope)
        if avatar is None:
            await self.app(scope, receive, send)
            return
        response = await self.serve(TokenGet(scope), avatar or None)
        body = await response.get_data()
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.items()
        ]
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": headers})  # fmt: skip
        await send({"type": "http.response.body", "body": body, "more_body": False})

    @staticmethod
    def token_get(scope: Any) -> str | None:
        """The avatar name ("" for the first) of a component's token GET, None for Quart.

        Taken: a GET (HTTP/1.1 or later) of a token path with a plain Host, no body, a plain
        query (no percent escape), ASCII header names and ASCII cookies: :class:`TokenGet` then
        reads them as Quart's request would.
        """
        if scope["type"] != "http" or scope["method"] != "GET":
            return None
        if scope.get("http_version", "1.1") in ("1.0", "0.9"):
            return None  # no Host required: Quart fills it in from its own settings
        root = scope.get("root_path", "")
        path: str = scope["path"]
        if not path.startswith(root):
            return None
        match = _TOKEN_PATH.fullmatch(path[len(root) :])
        if match is None or not _PLAIN_QUERY.fullmatch(scope.get("query_string", b"")):
            return None
        hosts = 0
        for name, value in scope["headers"]:
            if name in _BODY_HEADERS or not name.isascii():
                return None  # a name werkzeug would case-fold otherwise ("ß" to "ss")
            if name == b"host":
                hosts += 1
                if not _PLAIN_HOST.fullmatch(value):
                    return None
            elif name == b"cookie" and not value.isascii():
                return None  # werkzeug's cookie parsers differ on other bytes: Quart reads it
        if hosts != 1:
            return None
        return match["avatar"] or ""


class ScopeHeaders:
    """An ASGI request's headers as Quart's request holds them: looked up in any case, values
    decoded as Latin-1, and ``Remote-Addr`` (the client's address, as Quart adds it) first."""

    __slots__ = ("_by_name",)

    def __init__(self, scope: Mapping[str, Any]) -> None:
        client = scope.get("client") or ["<local>"]
        by_name: dict[str, list[str]] = {"remote-addr": [client[0]]}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            values = by_name.get(key)
            if values is None:
                by_name[key] = [value.decode("latin-1")]
            else:
                values.append(value.decode("latin-1"))
        self._by_name = by_name

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...

    def get(self, key: str, default: str | None = None) -> str | None:
        values = self._by_name.get(key.lower())
        return values[0] if values else default

    def getlist(self, key: str) -> list[str]:
        return list(self._by_name.get(key.lower(), ()))


class TokenGet:
    """A token GET (:meth:`TokenFastPath.token_get` took it) read straight from its scope: what
    :class:`bridge.observe.incoming.Incoming` names, with the values Quart's request would give.

    Building Quart's request cost more than what the token endpoint reads of it (its headers
    object re-checks every header, its body waits on events, and werkzeug raises and catches an
    exception for each absent header it looks up, two of them to build it).
    """

    method = "GET"

    def __init__(self, scope: Mapping[str, Any]) -> None:
        self.scope = scope
        self.path: str = scope["path"][len(scope.get("root_path", "")) :]
        self.query_string: bytes = scope.get("query_string", b"")
        self.headers = ScopeHeaders(scope)
        self.remote_addr: str | None = self.headers.get("Remote-Addr")
        self.url_rule: QuartRule | None = None
        self.view_args: dict[str, Any] | None = None
        self._cookies: Mapping[str, str] | None = None
        self._args: Mapping[str, str] | None = None

    @property
    def cookies(self) -> Mapping[str, str]:
        # As werkzeug's request: every Cookie header, joined; ASCII only (token_get).
        if self._cookies is None:
            joined = ";".join(self.headers.getlist("Cookie"))
            self._cookies = parse_cookie(joined, cls=ImmutableMultiDict)
        return self._cookies

    @property
    def args(self) -> Mapping[str, str]:
        # As werkzeug's request; a plain query (token_get) has no escape to decode.
        if self._args is None:
            query = self.query_string.decode("ascii")
            self._args = ImmutableMultiDict(parse_qsl(query, keep_blank_values=True))
        return self._args
