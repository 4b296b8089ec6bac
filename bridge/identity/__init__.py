"""Who the visitor is: one :class:`Identity`, whichever way they came in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from quart import Request

from bridge.errors import LoginEnded

if TYPE_CHECKING:
    from bridge.sessions import SessionRecord

# A token's or a site session's claims: JSON its issuer chose, read field by field.
Claims = dict[str, Any]


# The ways in, as an identity (and the session it starts) records them.
Method = Literal["site_cookie", "jwt", "oidc", "session_check"]

# The claims of an identity that carries none: one shared, read-only mapping.
NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    method: Method
    claims: Mapping[str, Any] = field(default_factory=dict)


class IdentitySource(Protocol):
    """A way in. ``identify`` returns None when this source does not recognise the visitor.

    ``remote`` says whether recognising a visitor asks another server (the site's "who am I"
    URL): anonymous floods are then held per address before that call, not only after it.
    """

    method: Method
    remote: bool

    async def identify(self, request: Request, record: SessionRecord | None) -> Identity | None:
        """Recognise the visitor from the request (and, for sessions a login made, the record)."""

    def login_url(self, next_path: str) -> str: ...


__all__ = ["Claims", "Identity", "IdentitySource", "LoginEnded", "Method"]
