"""The log handler ``serve`` writes with: one write per turn of the event loop (per 20 ms at
most under load), in order; and the request log's line, written to it without a ``LogRecord``
when nothing else would see one.

Each request's line used to be a write of its own (a system call that lets go of the GIL);
lines now wait for the end of the loop's turn. Nothing may be lost or reordered on the way:
off the loop a line is written at once, and ``flush`` (``logging.shutdown`` at exit) writes
what waits.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.observe.logs import JsonFormatter, TurnBatchedHandler, info_fields, request_id


class Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)

    def lines(self) -> list[str]:
        return [json.loads(line)["msg"] for line in self.getvalue().splitlines()]


def _logger(stream: Writes, name: str) -> tuple[logging.Logger, TurnBatchedHandler]:
    handler = TurnBatchedHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger(f"test.log_writes.{name}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, handler


async def test_the_lines_of_one_loop_turn_are_one_write_in_order() -> None:
    stream = Writes()
    log, handler = _logger(stream, "turn")

    async def request(i: int) -> None:
        log.info(f"request {i}")

    await asyncio.gather(*(request(i) for i in range(20)))
    await asyncio.sleep(0)  # the turn that wrote them has ended: nothing written just before
    assert stream.lines() == [f"request {i}" for i in range(20)]
    assert len(stream.writes) == 1
    log.info("later")
    await asyncio.sleep(0)
    # The last write was just now: this line waits until write_every has passed since.
    assert stream.lines()[-1] != "later"
    await asyncio.sleep(handler.write_every * 1.5)
    assert stream.lines()[-1] == "later" and len(stream.writes) == 2


async def test_under_load_a_write_every_twenty_milliseconds_at_most() -> None:
    stream = Writes()
    log, handler = _logger(stream, "load")
    assert handler.write_every == 0.02  # serve's default
    loop = asyncio.get_running_loop()
    started = loop.time()
    lines = 0
    while loop.time() - started < 0.2:  # a line in every turn for 200 ms
        log.info(f"line {lines}")
        lines += 1
        await asyncio.sleep(0)
    await asyncio.sleep(handler.write_every * 1.5)
    assert stream.lines() == [f"line {i}" for i in range(lines)]
    assert lines > 100  # many turns ...
    assert len(stream.writes) <= 0.2 / handler.write_every + 2  # ... few writes


async def test_an_idle_handler_writes_at_the_end_of_the_turn() -> None:
    stream = Writes()
    log, handler = _logger(stream, "idle")
    for text in ("one", "two"):
        log.info(text)
        await asyncio.sleep(0)
        assert stream.lines()[-1] == text  # no write in the last write_every: no wait
        await asyncio.sleep(handler.write_every * 1.5)
    assert len(stream.writes) == 2


async def test_a_line_from_another_thread_is_written_at_once_after_those_waiting() -> None:
    stream = Writes()
    log, _ = _logger(stream, "thread")
    log.info("on the loop")
    thread = threading.Thread(target=log.info, args=("from a thread",))
    thread.start()
    thread.join()
    # Written before this turn ended, and after the loop's own line that was waiting.
    assert stream.lines() == ["on the loop", "from a thread"]


def _log_in_a_loop_that_stops_at_once(log: logging.Logger, text: str) -> None:
    """Log ``text`` in the last turn of a loop: the write it schedules never runs."""
    loop = asyncio.new_event_loop()

    def last_turn() -> None:
        log.info(text)
        loop.stop()  # the loop ends with this turn's callbacks, not those it scheduled

    loop.call_soon(last_turn)
    loop.run_forever()
    loop.close()


def test_flush_writes_what_waits_so_nothing_is_lost_at_exit() -> None:
    stream = Writes()
    log, handler = _logger(stream, "exit")
    _log_in_a_loop_that_stops_at_once(log, "the last line")
    assert stream.lines() == []
    handler.flush()  # logging.shutdown does this at exit
    assert stream.lines() == ["the last line"]


def test_a_new_loop_writes_what_a_closed_one_left_waiting() -> None:
    stream = Writes()
    log, _ = _logger(stream, "loops")

    async def line(text: str) -> None:
        log.info(text)

    _log_in_a_loop_that_stops_at_once(log, "from the first loop")
    asyncio.run(line("from the second loop"))
    assert stream.lines() == ["from the first loop", "from the second loop"]


def test_off_the_loop_every_line_is_written_at_once() -> None:
    stream = Writes()
    log, _ = _logger(stream, "sync")
    log.info("one")
    assert stream.lines() == ["one"]
    log.info("two")
    assert stream.lines() == ["one", "two"]


# --- the request log's line without a LogRecord (logs.info_fields) ------------------------

FIELDS = {"method": "GET", "path": "/request_tokens", "status": 200, "duration_ms": 0.42}


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every LogRecord made meanwhile, through logging's public record factory."""
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record)
        return record

    logging.setLogRecordFactory(counting)
    try:
        yield made
    finally:
        logging.setLogRecordFactory(factory)


def _entries(stream: Writes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_direct_line_is_the_formatters_line(records: list[logging.LogRecord]) -> None:
    stream = Writes()
    log, _ = _logger(stream, "direct")
    token = request_id.set("req-1")
    try:
        before = time.time()
        info_fields(log, "request", dict(FIELDS))
        assert records == []  # no record: serve's own handler is the only one to see it
        log.info("request", extra={"fields": dict(FIELDS)})
        after = time.time()
    finally:
        request_id.reset(token)
    direct, through_logging = _entries(stream)
    assert before - 0.001 <= direct["ts"] <= after + 0.001
    direct["ts"] = through_logging["ts"]
    assert direct == through_logging
    assert list(direct) == list(through_logging)  # the same keys in the same order
    assert direct["request_id"] == "req-1" and direct["level"] == "info"


async def test_direct_lines_keep_their_place_among_the_others() -> None:
    stream = Writes()
    log, _ = _logger(stream, "order")
    log.info("first")
    info_fields(log, "second", {})
    log.info("third")
    assert stream.lines() == []  # the same waiting lines, written at the turn's end
    await asyncio.sleep(0)
    assert stream.lines() == ["first", "second", "third"]
    assert len(stream.writes) == 1


class Refuse(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.seen.append(record.getMessage())
        return False


@pytest.mark.parametrize("on", ["logger", "handler"])
def test_a_filter_still_sees_and_drops_the_record(on: str) -> None:
    stream = Writes()
    log, handler = _logger(stream, f"filtered_on_{on}")
    refuse = Refuse()
    (log if on == "logger" else handler).addFilter(refuse)
    info_fields(log, "request", dict(FIELDS))
    assert refuse.seen == ["request"] and stream.lines() == []


def test_a_parent_loggers_filter_sees_no_record_of_a_child_as_in_logging() -> None:
    stream = Writes()
    parent = logging.getLogger("test.log_writes.parent")
    handler = TurnBatchedHandler(stream)
    handler.setFormatter(JsonFormatter())
    parent.handlers[:] = [handler]
    parent.propagate = False
    refuse = Refuse()
    parent.addFilter(refuse)
    child = logging.getLogger("test.log_writes.parent.child")
    child.setLevel(logging.INFO)
    # A logger's filters see only its own records; a parent's filters see no child's. The
    # direct path may skip them only as logging itself does: the line is written.
    info_fields(child, "request", dict(FIELDS))
    assert stream.lines() == ["request"]
    parent.removeFilter(refuse)
    child.addFilter(refuse)
    info_fields(child, "refused", dict(FIELDS))
    assert stream.lines() == ["request"] and refuse.seen == ["refused"]


def test_another_handler_gets_the_record_too(records: list[logging.LogRecord]) -> None:
    stream = Writes()
    log, _ = _logger(stream, "two_handlers")
    other = io.StringIO()
    second = logging.StreamHandler(other)
    second.setFormatter(JsonFormatter())
    log.addHandler(second)
    info_fields(log, "request", dict(FIELDS))
    assert len(records) == 1
    assert stream.lines() == ["request"]
    assert json.loads(other.getvalue())["path"] == "/request_tokens"


def test_another_formatter_writes_its_own_line() -> None:
    stream = Writes()
    log, handler = _logger(stream, "formatter")
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(fields)s"))
    info_fields(log, "request", {"status": 200})
    assert stream.getvalue() == "INFO request {'status': 200}\n"


def test_levels_still_decide() -> None:
    stream = Writes()
    log, handler = _logger(stream, "levels")
    log.setLevel(logging.WARNING)
    info_fields(log, "logger above info", {})
    log.setLevel(logging.INFO)
    handler.setLevel(logging.WARNING)
    info_fields(log, "handler above info", {})
    handler.setLevel(logging.NOTSET)
    logging.disable(logging.INFO)
    try:
        info_fields(log, "disabled", {})
    finally:
        logging.disable(logging.NOTSET)
    info_fields(log, "written", {})
    assert stream.lines() == ["written"]


def test_a_stream_that_fails_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    log, _ = _logger(Broken(), "broken")  # type: ignore[arg-type]
    info_fields(log, "request", dict(FIELDS))  # off a loop: written at once, and it fails
    assert "disk full" in capsys.readouterr().err
