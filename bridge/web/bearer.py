"""Bearer-token checks for the operator endpoints (admin API, metrics).

Browsers never attach an ``Authorization`` header on their own, and a cross-site page can only
set one through a CORS preflight that the bridge never approves, so a bearer-only endpoint
cannot be driven from another site the way a cookie-authenticated one could.

Admin tokens are named (``BRIDGE_ADMIN_TOKENS``) and held as SHA-256 digests only
(:class:`~bridge.settings.schema.OperatorToken`); a match names the operator for the audit trail.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from quart import Request

from bridge.errors import Unauthorized
from bridge.secret import Secret
from bridge.settings.schema import OperatorToken


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def bearer_matches(request: Request, expected: Secret) -> bool:
    """Tell whether the request carries ``Authorization: Bearer <expected>``."""
    value = _bearer(request)
    # Comparing fixed-length digests also keeps the token's length out of the timing.
    given = hashlib.sha256(value.encode("utf-8", "replace")).digest()
    wanted = hashlib.sha256(expected.reveal().encode("utf-8")).digest()
    return hmac.compare_digest(given, wanted) and bool(value)


def require_bearer(request: Request, expected: Secret) -> None:
    """Raise 401 unless the request carries the expected bearer token (no hint of why)."""
    if not bearer_matches(request, expected):
        raise Unauthorized()


def operator_named_by(token: str, tokens: Sequence[OperatorToken]) -> str | None:
    """Return the name of the admin token that ``token`` is, or None.

    Every digest is compared, in constant time, whichever matches: neither the time taken nor
    the order of the tokens tells which one (or whether any) came close.
    """
    given = OperatorToken.digest_of(token)
    found = None
    for candidate in tokens:
        if hmac.compare_digest(given, candidate.digest):
            found = candidate.name
    return found if token else None


def require_operator(request: Request, tokens: Sequence[OperatorToken]) -> str:
    """Return the name of the operator whose admin token the request carries; else 401."""
    name = operator_named_by(_bearer(request), tokens)
    if name is None:
        raise Unauthorized()
    return name
