"""The application factory: wire settings, store, identity, sessions, upstream and routes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from quart import Quart, Request, Response, g, jsonify, request
from quart.wrappers import BaseRequestWebsocket
from quart.wrappers.response import FileBody
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter

from bridge import requestlog
from bridge.connection import HTTPConnection
from bridge.errors import BadRequest, HTTPError, MethodNotAllowed, StoreUnavailable
from bridge.identity import IdentitySource
from bridge.mount import install
from bridge.runtime import assemble
from bridge.settings.schema import Settings
from bridge.store import Store

log = logging.getLogger("bridge.app")

WEB = Path(__file__).resolve().parent / "web"
MAX_BODY = 64 * 1024

_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    414: "request_too_large",
    431: "request_too_large",
}


UNBUILDABLE = "bridge.unbuildable_request"


class BridgeRequest(Request):
    """Quart's request, naming its blueprints without re-deriving them on every look."""

    @property
    def blueprints(self) -> list[str]:
        # Quart imports a helper and splits the endpoint's name each time: three times a request.
        endpoint = self.endpoint
        names = _BLUEPRINTS.get(endpoint)
        if names is None:
            names = _BLUEPRINTS[endpoint] = super().blueprints
        return names


_BLUEPRINTS: dict[str | None, list[str]] = {}  # by endpoint: as many as the app has routes


class BridgeQuart(Quart):
    """Quart, answering requests it cannot build (a ``Host`` werkzeug refuses) like any other,
    each run in the server's own task (:mod:`bridge.connection`)."""

    asgi_http_class = HTTPConnection
    request_class = BridgeRequest

    def create_url_adapter(self, request: BaseRequestWebsocket | None) -> MapAdapter | None:
        try:
            return super().create_url_adapter(request)
        except HTTPException:
            if request is None:
                raise
            # werkzeug raises BadHost here, before any handler of the app runs (a bare 500, and
            # no request log line). Route the request on no host at all instead, and let
            # refuse_unbuildable answer it as the first step of handling it.
            scope: dict[str, Any] = request.scope  # type: ignore[assignment]
            scope[UNBUILDABLE] = True
            return self.url_map.bind(
                "",
                script_name=request.root_path or None,
                url_scheme=request.scheme,
                default_method=request.method,
                path_info=request.path,
            )

    async def send_static_file(self, filename: str) -> Response:
        # Quart's FileBody opens the file in a worker thread once the answer is being sent; a
        # request cancelled meanwhile (a HEAD, a client gone) leaves that file open. The static
        # files are a few small assets: read here, whole, and answer from memory.
        response = await super().send_static_file(filename)
        body = response.response
        if isinstance(body, FileBody):
            with body.file_path.open("rb") as file:
                file.seek(body.begin)
                response.set_data(file.read(body.end - body.begin))
        return response


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    sentifyd_transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    sources: Sequence[IdentitySource] | None = None,
    oidc_transport: httpx.AsyncBaseTransport | None = None,
) -> Quart:
    """Build a bridge app. Tests pass a store, an upstream transport, a clock or sources."""
    app = BridgeQuart(
        "bridge",
        template_folder=str(WEB / "templates"),
        static_folder=str(WEB / "static"),
        static_url_path="/static",
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the contract's key order

    bridge = assemble(
        settings,
        store=store,
        sentifyd_transport=sentifyd_transport,
        oidc_transport=oidc_transport,
        clock=clock,
        sources=sources,
    )
    sessions = bridge.sessions
    app.extensions["bridge"] = bridge

    from bridge.routes import auth, health, pages, tokens
    from bridge.routes.pages import content_security_policy

    app.register_blueprint(tokens.blueprint)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(health.blueprint)
    from bridge.routes import admin
    from bridge.routes import metrics as metrics_routes

    if settings.admin_token is not None:
        app.register_blueprint(admin.blueprint)
    if metrics_routes.should_serve(bridge):
        app.register_blueprint(metrics_routes.blueprint)
    elif settings.metrics.enabled:
        # Not unsafe, just not served: say so once, without raising an operator's alarm.
        log.info("/metrics is off: set BRIDGE_METRICS_TOKEN (or [metrics] require_token = false)")
    metrics = bridge.metrics

    @app.before_request
    async def begin() -> None:
        requestlog.start()
        if request.scope.get(UNBUILDABLE):
            raise BadRequest("The request's Host header is not valid.")

    app.register_blueprint(auth.make_blueprint([p.redirect_path for p in settings.oidc]))
    _register_error_handlers(app)

    html_policy = content_security_policy(settings)

    @app.after_request
    async def finish(response: Response) -> Response:
        headers = response.headers
        if getattr(g._get_current_object(), "session_ended", False) and (
            sessions.cookie_name not in _set_cookie_names(response)
        ):
            sessions.clear_cookie(response)
        # The names once, then add or replace: werkzeug's get and setdefault raise (and catch)
        # an exception per header they do not find, and each lookup scans every header.
        present = {name.lower() for name, _ in headers.to_wsgi_list()}
        if "x-content-type-options" not in present:
            headers.add("X-Content-Type-Options", "nosniff")
        content_type = response.content_type or ""
        if content_type.partition(";")[0].strip().lower() == "text/html":
            # Every page may hold a sign-out or sign-in button: none may be framed elsewhere.
            headers["Content-Security-Policy"] = html_policy
            if "referrer-policy" not in present:
                headers.add("Referrer-Policy", "same-origin")
        if request.endpoint != "static":
            # Tokens, errors and pages are per visitor: never cached by a browser or a proxy.
            headers["Cache-Control"] = "no-store"
            _vary_on_cookie(response, present)
        return requestlog.finish(response, bridge, metrics)

    @app.after_serving
    async def close() -> None:
        await bridge.aclose()
        await bridge.store.close()

    install(app, settings.server)  # base_path, canonical paths, trusted forwarded headers
    return app


def _vary_on_cookie(response: Response, present: set[str]) -> None:
    """Add ``Cookie`` to the response's ``Vary`` (``present``: its header names, lower-case)."""
    if "vary" not in present:
        response.headers.add("Vary", "Cookie")
        return
    vary = ", ".join(response.headers.getlist("Vary"))
    if "cookie" not in (v.strip().lower() for v in vary.split(",")):
        response.headers["Vary"] = f"{vary}, Cookie" if vary.strip() else "Cookie"


def _set_cookie_names(response: Response) -> set[str]:
    return {h.split("=", 1)[0] for h in response.headers.getlist("Set-Cookie")}


def _register_error_handlers(app: Quart) -> None:
    @app.errorhandler(HTTPError)
    async def bridge_error(error: HTTPError) -> Response:
        g.error_code = error.code  # the request log and metrics name the outcome
        if isinstance(error, StoreUnavailable):
            log.warning("store unavailable")
        response = jsonify(error.body())
        response.status_code = error.status
        response.headers.update(error.headers())
        return response

    @app.errorhandler(HTTPException)
    async def http_exception(error: HTTPException) -> Response:
        status = error.code or 500
        g.error_code = _STATUS_CODES.get(status, "http_error")
        if status == 405:
            allowed = list(getattr(error, "valid_methods", None) or [])
            return await bridge_error(MethodNotAllowed(allowed))
        response = jsonify(
            {"error": _STATUS_CODES.get(status, "http_error"), "message": error.name}
        )
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        # Type only: the exception's text could quote a token or an upstream body.
        log.error("unhandled error", extra={"fields": {"exc_type": type(error).__name__}})
        g.error_code = "internal_error"
        response = jsonify(
            {"error": "internal_error", "message": "The bridge hit an unexpected error."}
        )
        response.status_code = 500
        return response
