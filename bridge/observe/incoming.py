"""What the bridge reads of a request on the token endpoint's way: :class:`Incoming`.

The token endpoint, the gate, the identity sources, the limits and the request log read a
request through this protocol only. Quart's ``Request`` is one; the other is the token fast
path's :class:`bridge.web.fastpath.TokenGet`, which reads the same values straight from the
ASGI scope for the component's token GETs (``tests/test_fastpath.py`` compares the two on every
attribute here). Anything else a route needs (a body, a form, ``url_for``) it reads from
Quart's request, and such a request never takes the fast path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, overload

if TYPE_CHECKING:
    from quart.routing import QuartRule


class HeaderView(Protocol):
    """A request's headers, read by name, in any case: the first value, or all of them."""

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...

    def getlist(self, key: str) -> list[str]: ...


class Incoming(Protocol):
    """The parts of a request the token endpoint's way reads (Quart's names and meanings)."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str:
        """The path below ``root_path`` (``base_path``), as routed."""

    @property
    def query_string(self) -> bytes: ...

    @property
    def scope(self) -> Mapping[str, Any]: ...

    @property
    def remote_addr(self) -> str | None: ...

    @property
    def headers(self) -> HeaderView: ...

    @property
    def cookies(self) -> Mapping[str, str]: ...

    @property
    def args(self) -> Mapping[str, str]: ...

    # Set by the routing: Quart's for its routes, the fast path's for the token GETs.
    url_rule: QuartRule | None
    view_args: dict[str, Any] | None
