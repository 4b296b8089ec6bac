"""OpenTelemetry traces: off unless the standard ``OTEL_*`` environment variables ask for them.

Tracing is on when ``OTEL_TRACES_EXPORTER=otlp`` or an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, unless
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. The SDK reads everything else
itself (service name, resource attributes, sampler, headers, timeouts): :func:`start` builds a
``TracerProvider`` with ``Resource.create()``, a ``BatchSpanProcessor`` and an
``OTLPSpanExporter()`` (OTLP over HTTP), given no arguments.

Off, no SDK is imported or set up: :func:`span` returns one shared no-op context, and the
request middleware (:class:`TracedRequests`) is not installed at all.

What a span may hold is the route, the method, the status, the avatar's name, the outcome and
the hashed session id the request log already names: never a header, a cookie, a query
string, a token, a handle, a key or a user.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

log = logging.getLogger("bridge.tracing")

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]

SCOPE = "sentifyd-bridge"
SERVICE_NAME = "sentifyd-bridge"  # when neither OTEL_SERVICE_NAME nor the resource names one
# The only request headers the propagator is shown: never a cookie or an authorization.
_PROPAGATED = frozenset((b"traceparent", b"tracestate"))


class _Quiet(TypedDict):
    record_exception: bool
    set_status_on_exception: bool


# An exception's text or stack may quote a token: spans record neither (the outcome says why).
_QUIET: _Quiet = {"record_exception": False, "set_status_on_exception": False}
_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()
_tracer: Tracer | None = None


def configured(environ: Mapping[str, str]) -> bool:
    """Tell whether ``environ`` asks for traces (see the module's docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "otlp":
        return True
    if exporter and exporter != "none":
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported (only otlp): no traces", exporter)
        return False
    if exporter == "none":
        return False
    return any(
        environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def start() -> TracerProvider | None:
    """Set up the SDK from the environment if it asks for traces; return the provider."""
    if not configured(os.environ):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    # serve shuts it down itself (stop), after its server has stopped, not at interpreter exit.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use(provider)
    log.info("traces on", extra={"fields": {"service": resource.attributes["service.name"]}})
    return provider


def stop(provider: TracerProvider | None) -> None:
    """Stop tracing and flush what is still queued (serve's last step)."""
    if provider is None:
        return
    use(None)
    provider.shutdown()


def use(provider: Any) -> None:
    """Trace through ``provider`` (an OpenTelemetry ``TracerProvider``), or not at all (None)."""
    global _tracer
    _tracer = provider.get_tracer(SCOPE) if provider is not None else None


def active() -> bool:
    return _tracer is not None


def span(name: str, **attributes: str | int) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one named ``name``; a shared no-op when tracing is off."""
    tracer = _tracer
    if tracer is None or not _recording():
        return _OFF
    return tracer.start_as_current_span(name, attributes=attributes, **_QUIET)


def client_span(name: str, **attributes: str | int) -> contextlib.AbstractContextManager[Any]:
    """A span for a call to another server (Sentifyd); a shared no-op when tracing is off."""
    tracer = _tracer
    if tracer is None or not _recording():
        return _OFF
    from opentelemetry.trace import SpanKind

    return tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes, **_QUIET)


def _recording() -> bool:
    """Whether the current span records: a request the sampler left out gets no children (the
    outgoing traceparent then names the request's span, unsampled)."""
    from opentelemetry import trace

    return trace.get_current_span().is_recording()


def annotate(**attributes: str | int | None) -> None:
    """Set ``attributes`` (those not None) on the current span, when tracing is on."""
    if _tracer is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def name_request(method: str, route: str | None) -> None:
    """Name the request's span after its route (``GET /request_tokens``), when tracing is on."""
    if _tracer is None or route is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    current.update_name(f"{method} {route}")
    current.set_attribute("http.route", route)


def outgoing_headers() -> dict[str, str] | None:
    """The W3C ``traceparent`` (and ``tracestate``) of the current span, or None when off."""
    if _tracer is None:
        return None
    from opentelemetry import propagate

    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


class TracedRequests:
    """ASGI middleware: one server span per HTTP request, continuing an incoming
    ``traceparent``; installed in front of everything (the token fast path too) when on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        tracer = _tracer
        if scope["type"] != "http" or tracer is None:
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, StatusCode

        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _PROPAGATED
        }
        method = str(scope["method"])
        with tracer.start_as_current_span(
            method,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
            **_QUIET,
        ) as current:

            async def send_status(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    current.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        current.set_status(StatusCode.ERROR)
                await send(message)

            await self.app(scope, receive, send_status)
