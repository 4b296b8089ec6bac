"""The token endpoint's fast path: an ASGI application in front of Quart.

The ``<sentifyd-bot>`` component's requests are nearly all the same: a GET of
``/request_tokens`` (or ``/request_tokens/<name>``) with no body, answered from the session's
cached tokens in a millisecond. Through Quart each such request costs two tasks (the handler,
and a receiver watching for the client to leave), an app and a request context, the hooks and
the dispatch. :class:`TokenFastPath` answers those GETs itself, with the same first step, view,
error answers and last step as the Quart route (``serve``, built by :func:`bridge.app.create_app`),
so the answer, its headers, the request log line and the metrics are the same; everything else
(another method, a body, an odd name, a Host werkzeug might refuse, a lifespan event) goes to
Quart untouched.

It runs behind the proxy-header and base-path middleware (:mod:`bridge.web.mount`), so it sees the
scope they produced. A request still waiting (on Sentifyd, on a lock) is not cancelled when its
client leaves: the tokens it fetches are cached for the session's next request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Request, Response
from werkzeug.datastructures import Headers

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]
Serve = Callable[[Request, str | None], Awaitable[Response]]

_TOKEN_PATH = re.compile(r"/request_tokens(?:/(?P<avatar>[A-Za-z0-9_-]{1,64}))?")
_PLAIN_HOST = re.compile(rb"(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}(?::[0-9]{1,5})?")
_BODY_HEADERS = frozenset((b"content-length", b"transfer-encoding"))


class TokenFastPath:
    """Answer the component's token GETs with ``serve``; hand everything else to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        serve: Serve,
        *,
        request_class: type[Request] = Request,
        max_content_length: int | None = None,
    ) -> None:
        self.app = app
        self.serve = serve
        self.request_class = request_class
        self.max_content_length = max_content_length

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        avatar = self.token_get(scope)
        if avatar is None:
            await self.app(scope, receive, send)
            return
        response = await self.serve(self.request_of(scope), avatar or None)
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

        Taken: a GET (HTTP/1.1 or later) of a token path with a plain Host and no body.
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
        if match is None:
            return None
        hosts = 0
        for name, value in scope["headers"]:
            if name in _BODY_HEADERS:
                return None
            if name == b"host":
                hosts += 1
                if not _PLAIN_HOST.fullmatch(value):
                    return None
        if hosts != 1:
            return None
        return match["avatar"] or ""

    def request_of(self, scope: Any) -> Request:
        """The Quart request for ``scope``, built as Quart builds it (its public constructor)."""
        headers = Headers()
        headers["Remote-Addr"] = (scope.get("client") or ["<local>"])[0]
        for name, value in scope["headers"]:
            headers.add(name.decode("latin-1").title(), value.decode("latin-1"))
        root = scope.get("root_path", "")
        request = self.request_class(
            scope["method"],
            scope["scheme"],
            scope["path"][len(root) :],
            scope["query_string"],
            headers,
            root,
            scope["http_version"],
            scope,
            max_content_length=self.max_content_length,
            send_push_promise=_no_push,
        )
        request.body.set_complete()  # a GET without a body: nothing more will come
        return request


async def _no_push(path: str, headers: Headers) -> None:
    """HTTP/2 server push: never used by the token endpoint."""
