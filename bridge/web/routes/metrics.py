"""Prometheus metrics at ``/metrics``.

Served when ``[metrics] enabled`` (the default) and either ``BRIDGE_METRICS_TOKEN`` is set, in
which case a scrape must send it as a bearer token, or ``[metrics] require_token = false``
(for a bridge port that only the monitoring network reaches). The site's proxy usually sends
the bridge's whole path prefix through, so an unauthenticated default would publish the
bridge's traffic to the internet.
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app, request

from bridge.observe.metrics import CONTENT_TYPE
from bridge.web.bearer import require_bearer
from bridge.wiring import Bridge

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
async def metrics() -> Response:
    bridge = Bridge.of(current_app)
    if bridge.settings.metrics_token is not None:
        require_bearer(request, bridge.settings.metrics_token)
    body = await bridge.metrics.render(bridge.store)
    response = Response(body, content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


def should_serve(bridge: Bridge) -> bool:
    """Tell whether this app serves ``/metrics`` at all."""
    settings = bridge.settings
    if not settings.metrics.enabled:
        return False
    return settings.metrics_token is not None or not settings.metrics.require_token
