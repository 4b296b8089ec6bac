"""What handling one request learns on its way: for its answer, its log line and its events.

The request's first step (:func:`bridge.web.requestlog.start`) opens an :class:`Exchange` in a
context variable; the modules that learn something (the sessions, the routes, the lifecycle)
note it there, and the last step reads it. It takes the place of Quart's ``g``, so the token
endpoint's ASGI fast path (:mod:`bridge.web.fastpath`), which pushes no Quart context, works the
same as a Quart route. Outside a request there is none, and nothing is noted.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from bridge.observe.incoming import Incoming


@dataclass(slots=True)
class Exchange:
    request: Incoming
    started: float  # time.perf_counter() at the first step
    request_id: str
    endpoint: str | None = None  # the route's name ("tokens.request_tokens"), None if unmatched
    avatar: str | None = None  # the avatar the token route serves
    session_id: str | None = None  # the hashed session id, once known
    session_ended: bool = False  # a session ended here: the answer clears the visitor's cookie
    error_code: str | None = None  # the refusal's code, for the log line and the metric
    operator: bool = False  # the admin API: this client is not the user's


_current: ContextVar[Exchange | None] = ContextVar("bridge_exchange", default=None)


def current() -> Exchange | None:
    """The exchange of the request being handled, or None outside one."""
    return _current.get()


def note(**facts: Any) -> None:
    """Note ``facts`` (fields of :class:`Exchange`) on the request being handled, if any."""
    exchange = _current.get()
    if exchange is not None:
        for name, value in facts.items():
            setattr(exchange, name, value)  # slotted: a name it does not have raises


def open_exchange(exchange: Exchange) -> None:
    _current.set(exchange)


def close_exchange() -> None:
    _current.set(None)
