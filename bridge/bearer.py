"""Bearer-token checks for the operator endpoints (admin API, metrics).

Browsers never attach an ``Authorization`` header on their own, and a cross-site page can only
set one through a CORS preflight that the bridge never approves, so a bearer-only endpoint
cannot be driven from another site the way a cookie-authenticated one could.
"""

from __future__ import annotations

import hashlib
import hmac

from quart import Request

from bridge.errors import Unauthorized
from bridge.secret import Secret


def bearer_matches(request: Request, expected: Secret) -> bool:
    """Tell whether the request carries ``Authorization: Bearer <expected>``."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        value = ""
    # Comparing fixed-length digests also keeps the token's length out of the timing.
    given = hashlib.sha256(value.strip().encode("utf-8", "replace")).digest()
    wanted = hashlib.sha256(expected.reveal().encode("utf-8")).digest()
    return hmac.compare_digest(given, wanted) and bool(value)


def require_bearer(request: Request, expected: Secret) -> None:
    """Raise 401 unless the request carries the expected bearer token (no hint of why)."""
    if not bearer_matches(request, expected):
        raise Unauthorized()
