"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from quart import Blueprint, Response, current_app, jsonify

from bridge.errors import StoreUnavailable
from bridge.wiring import Bridge

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
async def healthz() -> Response:
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
async def readyz() -> Response | tuple[Response, int]:
    bridge = Bridge.of(current_app)
    try:
        store_ok = await bridge.store.ping()
    except StoreUnavailable:
        store_ok = False
    body = {
        "status": "ok" if store_ok else "unavailable",
        "checks": {"config": "ok", "store": "ok" if store_ok else "unavailable"},
    }
    return jsonify(body), 200 if store_ok else 503
