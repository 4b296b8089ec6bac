"""The log handler ``serve`` writes with: one write per turn of the event loop, in order.

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

from bridge.observe.logs import JsonFormatter, TurnBatchedHandler


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
    log, _ = _logger(stream, "turn")

    async def request(i: int) -> None:
        log.info(f"request {i}")

    await asyncio.gather(*(request(i) for i in range(20)))
    await asyncio.sleep(0)  # the turn that wrote them has ended
    assert stream.lines() == [f"request {i}" for i in range(20)]
    assert len(stream.writes) < 20  # fewer writes than lines; one for those of a turn
    log.info("later")
    assert stream.lines()[-1] != "later"  # waiting for its turn to end ...
    await asyncio.sleep(0)
    assert stream.lines()[-1] == "later"  # ... and written then


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
