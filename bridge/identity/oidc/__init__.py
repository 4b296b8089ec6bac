"""Single sign-on: the bridge as an OpenID Connect relying party, one module per concept.

``documents`` (discovery and keys), ``tokens`` (ID and logout token checks), ``provider`` (the
flows with one provider), ``source`` (the identity source for OIDC sessions), ``login`` (the
login, callback and logout flows the routes run).
"""

from bridge.identity.oidc.documents import issuer_hash
from bridge.identity.oidc.login import STATE_TTL, OIDCLogin
from bridge.identity.oidc.provider import OIDCProvider, ProviderTokens
from bridge.identity.oidc.source import METHOD, OIDCSource
from bridge.identity.oidc.tokens import session_claims
from bridge.identity.refetch import FETCH_BACKOFF, JWKS_MAX_AGE

__all__ = [
    "FETCH_BACKOFF",
    "JWKS_MAX_AGE",
    "METHOD",
    "STATE_TTL",
    "OIDCLogin",
    "OIDCProvider",
    "OIDCSource",
    "ProviderTokens",
    "issuer_hash",
    "session_claims",
]
