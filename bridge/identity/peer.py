"""What the identity sources that ask another server share: one bounded client and a clock.

The JWT login fetches its provider's JWKS and the session check asks the site's "who am I" URL;
both over a client with one deadline per call, a capped answer, no redirects and no cookies
kept (:func:`bridge.upstream.outbound.peer_client_options`), and both send a visitor who
must sign in to the site's ``login_url``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, Generic, Protocol, TypeVar
from urllib.parse import quote

import httpx

from bridge.upstream.outbound import peer_client_options


class PeerSettings(Protocol):
    @property
    def timeout(self) -> float: ...

    @property
    def login_url(self) -> str: ...


S = TypeVar("S", bound=PeerSettings)


class PeerSource(Generic[S]):
    """An identity source with its settings, a client of its peer and the bridge's clock."""

    max_answer_bytes: ClassVar[int]

    def __init__(
        self,
        settings: S,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        options = peer_client_options(
            transport, timeout=settings.timeout, max_bytes=self.max_answer_bytes
        )
        self.http = httpx.AsyncClient(**options, headers={"Accept": "application/json"})

    async def aclose(self) -> None:
        await self.http.aclose()

    def login_url(self, next_path: str) -> str:
        return self.settings.login_url.replace("{next}", quote(next_path, safe="/"))
