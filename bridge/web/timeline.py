"""A user's token events over a window, laid out as a chart the console draws as SVG.

One lane per kind of event (started, issued, refreshed, handle reuse, denied, ended), time
running left to right over the last hour, day or week, one mark per event. The layout is
computed here and the SVG written by the template (``console_user.html``), on the server: the
page needs no script, which the bridge's Content-Security-Policy (``script-src 'self'``) would
hold to a separate file anyway.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

from bridge.observe.lifecycle import Event

Window = Literal["hour", "day", "week"]
WINDOWS: tuple[Window, ...] = get_args(Window)
WINDOW_SECONDS: dict[Window, int] = {"hour": 3600, "day": 86400, "week": 7 * 86400}
WINDOW_LABELS: dict[Window, str] = {"hour": "Last hour", "day": "Last day", "week": "Last week"}
# Tick spacing and label format per window: every 10 minutes, 3 hours, day.
_TICKS: dict[Window, tuple[int, str]] = {
    "hour": (600, "%H:%M"),
    "day": (3 * 3600, "%H:%M"),
    "week": (86400, "%a %d"),
}
LANES: tuple[tuple[str, str], ...] = (
    ("session_started", "Started"),
    ("tokens_issued", "Issued"),
    ("tokens_refreshed", "Refreshed"),
    ("refresh_handle_reused", "Handle reuse"),
    ("access_denied", "Denied"),
    ("session_ended", "Ended"),
)

WIDTH = 960
LEFT = 150  # room for the lane names
RIGHT = 24
TOP = 16
LANE_HEIGHT = 38
AXIS = 34  # the time axis under the lanes
SKEW = 60.0
MAX_LABELS = 8  # more endings than this in a window: reasons in tooltips only
LABEL_ROOM = 150  # the width one reason's words take


@dataclass(frozen=True)
class Lane:
    event: str
    label: str
    y: float
    count: int


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    event: str
    reason: str  # session_ended only
    session: str  # the first 8 hex digits of the hashed session id
    title: str  # the tooltip: when, what, which session, why, by whom
    label: str = ""  # written beside the mark: an ending's reason, when there are few
    label_x: float = 0.0
    label_anchor: str = "start"


@dataclass(frozen=True)
class Timeline:
    window: Window
    start: float
    end: float
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    lanes: tuple[Lane, ...]
    ticks: tuple[Tick, ...]
    marks: tuple[Mark, ...]
    events: tuple[Event, ...]  # the events drawn, newest first


def in_window(events: Sequence[Event], *, now: float, window: Window) -> list[Event]:
    """The events of the last ``window`` up to ``now``, in the order given.

    Up to ``SKEW`` seconds past ``now`` count as now: an event's time is rounded to the
    millisecond, and another instance on the same store may run a little ahead.
    """
    start = now - WINDOW_SECONDS[window]
    return [
        e
        for e in events
        if isinstance(e.get("time"), int | float) and start <= e["time"] <= now + SKEW
    ]


def build(events: Sequence[Event], *, now: float, window: Window) -> Timeline:
    """Lay out ``events`` (any order) of the ``window`` ending at ``now``."""
    span = WINDOW_SECONDS[window]
    start = now - span
    drawn = [e for e in in_window(events, now=now, window=window) if _lane_of(e) is not None]
    bottom = TOP + LANE_HEIGHT * len(LANES)
    plot = WIDTH - LEFT - RIGHT

    def x_of(moment: float) -> float:
        return round(LEFT + min(moment - start, span) / span * plot, 1)

    lanes = tuple(
        Lane(name, label, TOP + LANE_HEIGHT * (index + 0.5), sum(e["event"] == name for e in drawn))
        for index, (name, label) in enumerate(LANES)
    )
    step, fmt = _TICKS[window]
    first = math.ceil(start / step) * step
    ticks = tuple(
        Tick(x_of(moment), time.strftime(fmt, time.gmtime(moment)))
        for moment in range(first, int(now) + 1, step)
    )
    marks = tuple(
        Mark(
            x=x_of(e["time"]),
            y=lanes[_lane_of(e) or 0].y,
            event=e["event"],
            reason=str(e.get("reason", "")),
            session=str(e.get("session", ""))[:8],
            title=describe(e),
        )
        for e in sorted(drawn, key=lambda e: e["time"])
    )
    marks = _with_labels(marks)
    return Timeline(
        window=window,
        start=start,
        end=now,
        width=WIDTH,
        height=bottom + AXIS,
        left=LEFT,
        right=WIDTH - RIGHT,
        top=TOP,
        bottom=bottom,
        lanes=lanes,
        ticks=ticks,
        marks=marks,
        events=tuple(sorted(drawn, key=lambda e: e["time"], reverse=True)),
    )


def describe(event: Event) -> str:
    """One line about an event, for a mark's tooltip."""
    parts = [
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(event["time"])),
        str(event["event"]).replace("_", " "),
    ]
    if event.get("reason"):
        parts.append(f"reason {event['reason']}")
    if event.get("session"):
        parts.append(f"session {str(event['session'])[:8]}")
    if event.get("avatar"):
        parts.append(f"avatar {event['avatar']}")
    if event.get("actor"):
        parts.append(f"by {event['actor']} ({event.get('by', '')})")
    return " · ".join(parts)


def _with_labels(marks: tuple[Mark, ...]) -> tuple[Mark, ...]:
    """Write the reason beside each ending, newest first, where it overlaps no other label."""
    endings = sorted((m for m in marks if m.event == "session_ended"), key=lambda m: -m.x)
    if len(endings) > MAX_LABELS:
        return marks
    labelled: set[int] = set()
    last = math.inf
    for mark in endings:
        if last - mark.x >= LABEL_ROOM:
            labelled.add(id(mark))
            last = mark.x
    return tuple(_labelled(m) if id(m) in labelled else m for m in marks)


def _labelled(mark: Mark) -> Mark:
    """The mark with its reason beside it, on the side with room for the words."""
    text = mark.reason.replace("_", " ")
    near_end = mark.x > WIDTH - RIGHT - 140
    return replace(
        mark,
        label=text,
        label_x=mark.x - 10 if near_end else mark.x + 10,
        label_anchor="end" if near_end else "start",
    )


def _lane_of(event: Event) -> int | None:
    for index, (name, _) in enumerate(LANES):
        if event.get("event") == name:
            return index
    return None
