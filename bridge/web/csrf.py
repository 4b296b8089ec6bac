"""Tokens that tie a state-changing form (Sign out, "my devices") to the session that shows it.

The token is an HMAC of the session id (or of what else binds the form to its visitor) under
``BRIDGE_SECRET_KEY``, for one purpose: another site can neither read it (it travels in this
site's pages and JSON only) nor compute it, and one form's token is no good for another's.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from bridge.secret import Secret

LOGOUT = "logout"
ACCOUNT = "account"  # the "my devices" page's forms (bridge.web.routes.account)


def _mac(key: Secret, session_id: str, purpose: str) -> str:
    message = f"sentifyd-bridge/{purpose}/v1:{session_id}".encode()
    return hmac.new(key.reveal().encode(), message, hashlib.sha256).hexdigest()


def csrf_token(keys: Sequence[Secret], session_id: str, *, purpose: str = LOGOUT) -> str:
    """Return the session's token, under the newest key."""
    return _mac(keys[0], session_id, purpose)


def check_csrf_token(
    keys: Sequence[Secret], session_id: str, token: str | None, *, purpose: str = LOGOUT
) -> bool:
    """Tell whether ``token`` is the session's token under any configured key."""
    if not token or len(token) != 64:
        return False
    return any(hmac.compare_digest(_mac(key, session_id, purpose), token) for key in keys)
