"""Structured logging: one JSON object per line.

Callers pass facts in ``extra={"fields": {...}}``; nothing here formats a request, a cookie or
a token, and the formatter never adds exception text from outside the bridge's own messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import time
from contextvars import ContextVar
from typing import Any

import msgspec

# The id of the request being handled, added to every line logged while handling it.
request_id: ContextVar[str | None] = ContextVar("bridge_request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exc_type = None
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: its text may quote input we were given.
            exc_type = record.exc_info[0].__name__
        return json_line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            getattr(record, "fields", None),
            exc_type,
        )


def json_line(
    created: float, level: str, logger: str, msg: str, fields: object, exc_type: str | None
) -> str:
    """The JSON line of one record, as :class:`JsonFormatter` writes it."""
    entry: dict[str, Any] = {
        "ts": round(created, 3),
        "level": level.lower(),
        "logger": logger,
        "msg": msg,
    }
    if isinstance(fields, dict):
        entry.update(fields)
    current = request_id.get()
    if current is not None:
        entry.setdefault("request_id", current)
    if exc_type is not None:
        entry["exc_type"] = exc_type
    try:
        return _encode(entry).decode("utf-8")
    except (TypeError, ValueError, OverflowError):  # a key not text, an int past 64 bits
        return json.dumps(entry, default=str, separators=(",", ":"))


_encode = msgspec.json.Encoder(enc_hook=str).encode


class TurnBatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines of a turn of the event loop, or of a few turns
    under load, in one write.

    On a running loop a line waits for the end of the loop's turn (``call_soon``), and, when
    the last write was less than ``write_every`` seconds ago (20 ms), until that much time has
    passed (``call_later``): under load many requests end in that time, and a write of each
    line of its own was one more system call, and one more hand-over of the GIL to the
    server's thread, per request. An idle bridge's line is written at the end of its turn. Off
    a loop (another thread, start-up, after the loop ended) the line is written at once, after
    any still waiting, so lines keep their order. ``flush`` writes what waits;
    ``logging.shutdown`` calls it at exit.
    """

    def __init__(self, stream: Any, *, write_every: float = 0.02) -> None:
        super().__init__(stream)
        self.write_every = write_every
        self._waiting: list[str] = []
        self._due_on: asyncio.AbstractEventLoop | None = None  # the loop a write is due on
        self._written_at = -math.inf  # time.monotonic() of the last write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.push(self.format(record))
        except Exception:  # noqa: BLE001 - logging's contract: report on stderr, never raise
            self.handleError(record)

    def push(self, line: str) -> None:
        """Write ``line`` when a write is due (at once off a loop), with the handler's lock
        held, as ``Handler.handle`` holds it around ``emit``."""
        self._waiting.append(line + self.terminator)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._due_on is not loop:  # (a loop that ended before its turn did too)
            self._due_on = loop
            wait = self._written_at + self.write_every - time.monotonic()
            if wait > 0:
                loop.call_later(wait, self._write_due)
            else:
                loop.call_soon(self._write_due)

    def _write_due(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._due_on = None
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - as emit: a full or closed stream is reported
                self.handleError(logging.makeLogRecord({"msg": "log lines not written"}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            waiting, self._waiting = self._waiting, []
            if waiting:
                self._written_at = time.monotonic()
                self.stream.write("".join(waiting))
            super().flush()


def info_fields(logger: logging.Logger, msg: str, fields: dict[str, Any]) -> None:
    """``logger.info(msg, extra={"fields": fields})``: the same line, and without a
    ``LogRecord`` when no one but ``serve``'s own handler would see one.

    The request log's line, once per request: building the record and passing it through the
    logger's and the handler's machinery cost more than the line itself. Whenever anything else
    could look at the record (a filter, another handler, another formatter, a handler level
    above INFO: an operator's or a test's logging set-up), it goes through ``logging`` as ever.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _sole_batched_handler(logger)
    if handler is None:
        logger.info(msg, extra={"fields": fields})
        return
    level = logging.getLevelName(logging.INFO)
    line = json_line(time.time(), level, logger.name, msg, fields, None)
    handler.acquire()
    try:
        handler.push(line)
    except Exception:  # noqa: BLE001 - as emit: report on stderr, never raise
        handler.handleError(logging.makeLogRecord({"msg": msg}))
    finally:
        handler.release()


def _sole_batched_handler(logger: logging.Logger) -> TurnBatchedHandler | None:
    """The handler an INFO record of ``logger`` would reach, when it is the only one, is
    ``serve``'s (a :class:`TurnBatchedHandler` with a :class:`JsonFormatter`, no filter) and
    ``logger`` has no filter (as in ``logging``, its ancestors' filters see none of its
    records); None otherwise."""
    if logger.filters:
        return None
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    if len(found) != 1:
        return None  # none: logging's last resort; several: each must get the record
    handler = found[0]
    if (
        type(handler) is not TurnBatchedHandler
        or handler.filters
        or handler.level > logging.INFO
        or type(handler.formatter) is not JsonFormatter
    ):
        return None
    return handler


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    # The formatter reads none of the caller's file and line, thread or process: the logging
    # HOWTO's "Optimization" switches, so each record skips collecting them (a stack walk).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = TurnBatchedHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_libraries()


def quiet_libraries() -> None:
    """Keep libraries' request logging out: it would print URLs and headers we do not vet."""
    for name in ("httpx", "httpcore", "hypercorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
