"""Same origin only: the one rule for every endpoint that acts (tokens, logout, admin).

A browser names where a request comes from with ``Sec-Fetch-Site`` and ``Origin``. Accepted:
``same-origin`` or ``none`` (the visitor's own navigation), or no ``Sec-Fetch-Site`` at all
(an older browser, or a server such as an identity provider) when ``Origin`` is absent or the
public origin. ``same-site`` is refused like ``cross-site``: a sibling subdomain is another
origin, and may be run by someone else. The only exception is an origin the operator listed
in ``[server] allowed_origins``.
"""

from __future__ import annotations

from bridge.errors import CrossSiteRequest
from bridge.observe.incoming import Incoming
from bridge.settings.schema import ServerSettings

_OWN = ("same-origin", "none")


def check_same_origin(request: Incoming, server: ServerSettings) -> str | None:
    """Refuse a request from another origin (403 ``cross_site_request``).

    Return the request's ``Origin`` when it is one of ``allowed_origins`` (for CORS headers).
    """
    # getlist: werkzeug's get raises and catches an exception for an absent header.
    sites, origins = request.headers.getlist("Sec-Fetch-Site"), request.headers.getlist("Origin")
    site = sites[0].strip().lower() if sites else ""
    origin = origins[0].strip().lower() if origins else None
    if origin is not None and origin in server.allowed_origins:
        return origin
    if site and site not in _OWN:
        raise CrossSiteRequest()
    if origin is not None and origin != server.public_origin:
        raise CrossSiteRequest()
    return None
