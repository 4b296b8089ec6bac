"""Tokens that tie a state-changing form (Sign out) to the session that shows it.

The token is an HMAC of the session id under ``BRIDGE_SECRET_KEY``: another site can neither
read it (it travels in this site's pages and JSON only) nor compute it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from bridge.secret import Secret

_PURPOSE = b"sentifyd-bridge/logout/v1:"


def _mac(key: Secret, session_id: str) -> str:
    return hmac.new(
        key.reveal().encode(), _PURPOSE + session_id.encode(), hashlib.sha256
    ).hexdigest()


def csrf_token(keys: Sequence[Secret], session_id: str) -> str:
    """Return the session's token, under the newest key."""
    return _mac(keys[0], session_id)


def check_csrf_token(keys: Sequence[Secret], session_id: str, token: str | None) -> bool:
    """Tell whether ``token`` is the session's token under any configured key."""
    if not token or len(token) != 64:
        return False
    return any(hmac.compare_digest(_mac(key, session_id), token) for key in keys)
