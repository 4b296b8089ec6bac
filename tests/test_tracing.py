"""OpenTelemetry traces (bridge/observe/tracing.py): a real ``sentifyd-bridge serve`` exporting over
OTLP/HTTP to a receiver on 127.0.0.1, with the stand-in Sentifyd recording the ``traceparent``
it is sent."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.observe import tracing
from support import leaks as support_leaks
from support.config import API_KEY, AVATAR_ID, TEST_ENV, serve_config, write_bridge_toml
from support.live import LiveServer
from support.redis import COOKIE, BridgeProcess, Visitor

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
CHILDREN = {"identity", "store.record.read", "store.record.write", "lock.wait", "sentifyd.login"}


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: keeps the bodies POSTed to /v1/traces."""

    bodies: list[bytes] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[Span]:
        found: list[Span] = []
        for body in self.bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    found.extend(scope.spans)
        return found

    def services(self) -> set[str]:
        names = set()
        for body in self.bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for attribute in resource.resource.attributes:
                    if attribute.key == "service.name":
                        names.add(attribute.value.string_value)
        return names


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                received.bodies.append(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # quiet: the test reads what was received

    received.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=received.server.serve_forever, daemon=True)
    thread.start()
    yield received
    received.server.shutdown()
    received.server.server_close()
    thread.join(5)


class RecordingHeaders:
    """ASGI middleware in front of the stand-in Sentifyd: keeps each request's traceparent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.traceparents: list[str | None] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            value = headers.get(b"traceparent")
            self.traceparents.append(value.decode() if value is not None else None)
        await self.app(scope, receive, send)


@pytest.fixture
def sentifyd() -> Iterator[tuple[LiveServer, RecordingHeaders]]:
    recorder = RecordingHeaders(create_fake_sentifyd({API_KEY: AVATAR_ID}, token_ttl=3600))
    server = LiveServer(recorder).start()
    yield server, recorder
    server.stop()


def _bridge(tmp_path: Path, backend: str, otel: dict[str, str]) -> BridgeProcess:
    config = tmp_path / "bridge.toml"
    write_bridge_toml(config, **serve_config(backend))
    process = BridgeProcess(tmp_path, "bridge", config_path=config)
    process.env = {k: v for k, v in process.env.items() if not k.startswith("OTEL_")} | otel
    return process.start()


def _ancestors(span: Span, by_id: dict[bytes, Span]) -> list[bytes]:
    chain = []
    while span.parent_span_id in by_id:
        chain.append(span.parent_span_id)
        span = by_id[span.parent_span_id]
    return chain


def _attributes(span: Span) -> dict[str, object]:
    out: dict[str, object] = {}
    for attribute in span.attributes:
        value = attribute.value
        out[attribute.key] = (
            value.string_value if value.HasField("string_value") else value.int_value
        )
    return out


async def test_a_token_request_continues_the_incoming_trace_to_sentifyd_and_leaks_nothing(
    tmp_path: Path, receiver: Receiver, sentifyd: tuple[LiveServer, RecordingHeaders]
) -> None:
    upstream, recorder = sentifyd
    # A long batch delay: the spans arrive only because stopping serve flushes them.
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "bridge-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
    }
    bridge = _bridge(tmp_path, upstream.url, otel)
    visitor = Visitor("alice")
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(
                f"{bridge.url}/request_tokens",
                headers={"Cookie": f"session={visitor.site_cookie}", "traceparent": TRACEPARENT},
            )
            assert answer.status_code == 200, answer.text
            session = answer.cookies[COOKIE]
            tokens = answer.json()["tokens"]
            # A cached answer, by the fast path, in a trace of its own.
            again = await http.get(
                f"{bridge.url}/request_tokens",
                headers={"Cookie": f"session={visitor.site_cookie}; {COOKIE}={session}"},
            )
            assert again.status_code == 200
        assert not receiver.bodies  # nothing before serve stops: the flush is serve's last step
    finally:
        bridge.stop()
    assert receiver.bodies, bridge.log()[-3000:]
    assert receiver.services() == {"bridge-under-test"}

    spans = receiver.spans()
    by_id = {span.span_id: span for span in spans}
    served = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    assert "GET /healthz" in {s.name for s in served}  # through Quart, the start-up probe
    requests = [s for s in served if s.name == "GET /request_tokens"]
    assert len(requests) == 2  # answered by the fast path
    first = next(s for s in requests if s.trace_id.hex() == TRACE_ID)
    assert first.parent_span_id.hex() == PARENT_ID
    assert first.name == "GET /request_tokens"
    attributes = _attributes(first)
    assert set(attributes) == {
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "bridge.avatar",
        "bridge.outcome",
        "bridge.session",
    }
    assert attributes["http.route"] == "/request_tokens"
    assert attributes["http.response.status_code"] == 200
    assert attributes["bridge.avatar"] == "default"
    assert attributes["bridge.outcome"] == "ok"
    assert isinstance(attributes["bridge.session"], str) and attributes["bridge.session"]

    under = {s.name: s for s in spans if first.span_id in _ancestors(s, by_id)}
    assert set(under) >= CHILDREN, sorted(under)
    assert all(s.trace_id == first.trace_id for s in under.values())
    login = under["sentifyd.login"]
    assert login.kind == Span.SPAN_KIND_CLIENT
    assert _attributes(login) == {"bridge.avatar": "default", "bridge.outcome": "ok"}

    second = next(s for s in requests if s is not first)
    assert second.trace_id.hex() != TRACE_ID and not second.parent_span_id
    assert _attributes(second)["bridge.outcome"] == "ok"

    # Sentifyd was sent the trace: the login span is the parent of its request.
    assert recorder.traceparents == [f"00-{TRACE_ID}-{login.span_id.hex()}-01"]

    exported = b"".join(receiver.bodies)
    secrets = [
        *TEST_ENV.values(),
        API_KEY,
        visitor.site_cookie,
        session,
        tokens["accessToken"],
        tokens["refreshToken"],
        *upstream.app.app.extensions["fake_sentifyd"].issued_refresh_tokens,
        *upstream.app.app.extensions["fake_sentifyd"].issued_access_tokens,
    ]
    assert all(len(value) >= 8 for value in secrets)
    for value in secrets:
        assert value.encode() not in exported
        support_leaks.credential(value)
    text = "\n".join(str(span) for span in spans) + exported.decode("latin-1")
    support_leaks.scan(text, "exported spans")


async def test_otel_sdk_disabled_wins_over_an_endpoint(
    tmp_path: Path, receiver: Receiver, sentifyd: tuple[LiveServer, RecordingHeaders]
) -> None:
    upstream, recorder = sentifyd
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_SDK_DISABLED": "true",
    }
    bridge = _bridge(tmp_path, upstream.url, otel)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(
                f"{bridge.url}/request_tokens",
                headers={
                    "Cookie": f"session={Visitor('alice').site_cookie}",
                    "traceparent": TRACEPARENT,
                },
            )
            assert answer.status_code == 200
    finally:
        bridge.stop()
    assert receiver.bodies == []
    assert recorder.traceparents == [None]  # nothing sent on to Sentifyd either
    assert "traces on" not in bridge.log()


def test_without_otel_variables_no_opentelemetry_module_is_even_imported() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | TEST_ENV
    probe = (
        "import sys\n"
        "from bridge.observe import tracing\n"
        "from support.config import make_settings\n"
        "from bridge.app import create_app\n"
        "assert tracing.start() is None and not tracing.active()\n"
        "app = create_app(make_settings())\n"
        "assert not isinstance(app.asgi_app, tracing.TracedRequests)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    tests = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join([tests, env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_traces_are_on_only_when_otel_variables_ask(environ: dict[str, str], on: bool) -> None:
    assert tracing.configured(environ) is on


async def test_an_unsampled_request_exports_nothing_and_passes_its_trace_on_unsampled(
    tmp_path: Path, receiver: Receiver, sentifyd: tuple[LiveServer, RecordingHeaders]
) -> None:
    upstream, recorder = sentifyd
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",  # the probe's /healthz is not sampled either
    }
    bridge = _bridge(tmp_path, upstream.url, otel)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(
                f"{bridge.url}/request_tokens",
                headers={
                    "Cookie": f"session={Visitor('alice').site_cookie}",
                    "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00",
                },
            )
            assert answer.status_code == 200
    finally:
        bridge.stop()
    assert receiver.spans() == []
    [sent] = recorder.traceparents
    assert sent is not None and sent.startswith(f"00-{TRACE_ID}-") and sent.endswith("-00")
