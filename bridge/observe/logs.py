"""Structured logging: one JSON object per line.

Callers pass facts in ``extra={"fields": {...}}``; nothing here formats a request, a cookie or
a token, and the formatter never adds exception text from outside the bridge's own messages.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Any

import msgspec

# The id of the request being handled, added to every line logged while handling it.
request_id: ContextVar[str | None] = ContextVar("bridge_request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        current = request_id.get()
        if current is not None:
            entry.setdefault("request_id", current)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: its text may quote input we were given.
            entry["exc_type"] = record.exc_info[0].__name__
        try:
            return _encode(entry).decode("utf-8")
        except (TypeError, ValueError, OverflowError):  # a key not text, an int past 64 bits
            return json.dumps(entry, default=str, separators=(",", ":"))


_encode = msgspec.json.Encoder(enc_hook=str).encode


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    # The formatter reads none of the caller's file and line, thread or process: the logging
    # HOWTO's "Optimization" switches, so each record skips collecting them (a stack walk).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_libraries()


def quiet_libraries() -> None:
    """Keep libraries' request logging out: it would print URLs and headers we do not vet."""
    for name in ("httpx", "httpcore", "hypercorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
