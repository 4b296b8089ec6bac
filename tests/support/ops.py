"""Helpers for the operations tests: operator tokens, captured JSON logs, metric reads."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bridge.observe.logs import JsonFormatter

ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdefghij"
METRICS_TOKEN = "metrics-token-for-tests-0123456789abcdefgh"
OPS_ENV = {"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN, "BRIDGE_METRICS_TOKEN": METRICS_TOKEN}


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class CapturedLog:
    """Every line the bridge logs, formatted by the real JSON formatter."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line]

    def of(self, logger: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["logger"] == logger]


@contextmanager
def captured_log() -> Iterator[CapturedLog]:
    captured = CapturedLog()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bridge")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def metric(text: str, name: str, **labels: str) -> float:
    """Return one sample's value from Prometheus text (0 when the series is absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
