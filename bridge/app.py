"""The application factory: wire settings, store, identity, sessions, upstream and routes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from quart import Quart, Request, Response, request
from quart.routing import QuartRule
from quart.wrappers import BaseRequestWebsocket
from quart.wrappers.response import FileBody
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter

from bridge.errors import BadRequest, HTTPError, MethodNotAllowed, StoreUnavailable
from bridge.gate import IdentitySource
from bridge.observe import tracing
from bridge.observe.exchange import Exchange, note
from bridge.observe.exchange import current as current_exchange
from bridge.observe.incoming import Incoming
from bridge.settings.schema import Settings
from bridge.store import Store
from bridge.web import requestlog
from bridge.web.bodies import DrainBodies
from bridge.web.fastpath import TokenFastPath
from bridge.web.mount import install
from bridge.web.requestlog import TOKEN_ENDPOINT
from bridge.wiring import Bridge, assemble
from bridge.wiring.reload import Reloader

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
    """Quart, answering requests it cannot build (a ``Host`` werkzeug refuses) like any other."""

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
    app.extensions["bridge"] = bridge

    def rebuild(new: Settings) -> Bridge:
        """The parts for reloaded settings: the running store and metrics, the test's seams."""
        return assemble(
            new,
            store=bridge.store,
            sentifyd_transport=sentifyd_transport,
            oidc_transport=oidc_transport,
            clock=clock,
            sources=sources,
            metrics=bridge.metrics,
        )

    reloader = Reloader(app.extensions, rebuild)
    app.extensions["bridge.reloader"] = reloader

    from bridge.web.routes import account, auth, health, pages, tokens
    from bridge.web.routes.pages import content_security_policy

    app.register_blueprint(tokens.blueprint)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(account.blueprint)
    app.register_blueprint(health.blueprint)
    from bridge.web.routes import admin, console
    from bridge.web.routes import metrics as metrics_routes

    if settings.admin_tokens:
        app.register_blueprint(admin.blueprint)
        if settings.admin.console:
            app.register_blueprint(console.blueprint)
    if metrics_routes.should_serve(bridge):
        app.register_blueprint(metrics_routes.blueprint)
    elif settings.metrics.enabled:
        # Not unsafe, just not served: say so once, without raising an operator's alarm.
        log.info("/metrics is off: set BRIDGE_METRICS_TOKEN (or [metrics] require_token = false)")
    metrics = bridge.metrics  # one for the process: a reload keeps counting in it

    @app.before_request
    async def begin() -> None:
        current: Request = request._get_current_object()  # type: ignore[attr-defined]
        requestlog.start(current, current.endpoint)
        if current.scope.get(UNBUILDABLE):
            raise BadRequest("The request's Host header is not valid.")

    app.register_blueprint(auth.make_blueprint([p.redirect_path for p in settings.oidc]))
    app.register_error_handler(Exception, error_answer_of)
    app.register_error_handler(HTTPException, error_answer_of)

    policies = {id(settings): content_security_policy(settings)}  # the live settings' only

    def html_policy(settings: Settings) -> str:
        policy = policies.get(id(settings))
        if policy is None:  # reloaded settings
            policies.clear()
            policy = policies[id(settings)] = content_security_policy(settings)
        return policy

    @app.after_request
    async def after(response: Response) -> Response:
        exchange = current_exchange()
        if exchange is None:  # a request that failed before its first step
            current: Request = request._get_current_object()  # type: ignore[attr-defined]
            exchange = requestlog.start(current, current.endpoint)
        return finish(response, exchange, Bridge.of(app))

    def finish(response: Response, exchange: Exchange, bridge: Bridge) -> Response:
        """Every answer's last step: headers, the cleared cookie, the request's log line."""
        headers = response.headers
        sessions = bridge.sessions
        if exchange.session_ended and sessions.cookie_name not in _set_cookie_names(response):
            sessions.clear_cookie(response)
        # The names once, then add or replace: werkzeug's get and setdefault raise (and catch)
        # an exception per header they do not find, and each lookup scans every header.
        present = {name.lower() for name, _ in headers.to_wsgi_list()}
        if "x-content-type-options" not in present:
            headers.add("X-Content-Type-Options", "nosniff")
        content_type = response.content_type or ""
        if content_type.partition(";")[0].strip().lower() == "text/html":
            # Every page may hold a sign-out or sign-in button: none may be framed elsewhere.
            headers["Content-Security-Policy"] = html_policy(bridge.settings)
            if "referrer-policy" not in present:
                headers.add("Referrer-Policy", "same-origin")
        if exchange.endpoint != "static":
            # Tokens, errors and pages are per visitor: never cached by a browser or a proxy.
            headers["Cache-Control"] = "no-store"
            _vary_on_cookie(response, present)
        return requestlog.finish(response, exchange, bridge, metrics)

    token_rules: dict[bool, QuartRule] = {
        "avatar_name" in rule.arguments: rule  # type: ignore[misc]  # a QuartMap's rules
        for rule in app.url_map.iter_rules(TOKEN_ENDPOINT)
    }

    async def serve_tokens(request: Incoming, avatar_name: str | None) -> Response:
        """The token endpoint without Quart's request machinery: the same first step, view,
        error answers and last step as through Quart (see :mod:`bridge.web.fastpath`)."""
        bridge = Bridge.of(app)  # once: a reload meanwhile does not change this request's parts
        request.url_rule = token_rules[avatar_name is not None]
        request.view_args = {"avatar_name": avatar_name} if avatar_name is not None else {}
        exchange = requestlog.start(request, TOKEN_ENDPOINT)
        try:
            response = await tokens.answer(bridge, request, avatar_name)
        except Exception as error:  # noqa: BLE001 - answered as Quart's handlers answer it
            response = error_answer(error)
        return finish(response, exchange, bridge)

    @app.after_serving
    async def close() -> None:
        await reloader.aclose()
        current = Bridge.of(app)
        await current.aclose()
        await current.store.close()

    inner = app.asgi_app
    if settings.server.token_fast_path:
        inner = TokenFastPath(app.asgi_app, serve_tokens)
    # base_path, canonical paths, trusted forwarded headers, in front of the fast path
    install(app, settings.server, inner)
    # outermost but tracing: every early answer to a POST (a 400 bad path included) is drained
    app.asgi_app = DrainBodies(app.asgi_app)  # type: ignore[method-assign]
    if tracing.active():  # off, not even a check per request
        app.asgi_app = tracing.TracedRequests(app.asgi_app)  # type: ignore[method-assign]
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


async def error_answer_of(error: Exception) -> Response:
    return error_answer(error)


def error_answer(error: Exception) -> Response:
    """The JSON answer to what a request raised, through Quart's handlers or the direct path."""
    headers: dict[str, str] = {}
    if isinstance(error, HTTPError):
        if isinstance(error, StoreUnavailable):
            log.warning("store unavailable")
        code, status, body, headers = error.code, error.status, error.body(), error.headers()
    elif isinstance(error, HTTPException):
        status = error.code or 500
        if status == 405:
            return error_answer(MethodNotAllowed(list(getattr(error, "valid_methods", None) or [])))
        code = _STATUS_CODES.get(status, "http_error")
        body = {"error": code, "message": error.name}
    else:
        # Type only: the exception's text could quote a token or an upstream body.
        log.error("unhandled error", extra={"fields": {"exc_type": type(error).__name__}})
        code, status = "internal_error", 500
        body = {"error": code, "message": "The bridge hit an unexpected error."}
    note(error_code=code)  # the request log and metrics name the outcome
    # As jsonify writes it (ASCII, compact, a newline), without needing Quart's app context.
    text = json.dumps(body, ensure_ascii=True, separators=(",", ":")) + "\n"
    response = Response(text, status=status, mimetype="application/json")
    response.headers.update(headers)
    return response
