"""Single sign-on: the bridge as an OpenID Connect relying party, one module per concept.

``documents`` (discovery and keys), ``tokens`` (ID and logout token checks), ``provider`` (the
flows with one provider). The session a sign-in makes, and the identity such a session carries,
live with the sessions: :mod:`bridge.sessions.oidc_login` and :mod:`bridge.sessions.oidc_source`.
"""

from bridge.identity.oidc.documents import issuer_hash
from bridge.identity.oidc.provider import METHOD, OIDCProvider, ProviderTokens
from bridge.identity.oidc.tokens import session_claims
from bridge.identity.refetch import FETCH_BACKOFF, JWKS_MAX_AGE

__all__ = [
    "FETCH_BACKOFF",
    "JWKS_MAX_AGE",
    "METHOD",
    "OIDCProvider",
    "ProviderTokens",
    "issuer_hash",
    "session_claims",
]
