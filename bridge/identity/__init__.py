"""Who the visitor is: one :class:`Identity`, whichever way they came in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from bridge.errors import LoginEnded

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


__all__ = ["Claims", "Identity", "LoginEnded", "Method"]
