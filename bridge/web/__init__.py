"""The HTTP edge: the routes, the guards every route uses (``origin``, ``csrf``, ``redirects``,
``bearer``), the middleware (``proxy``, ``mount``, ``requestlog``), the token GETs' ASGI fast path
and the servers ``serve`` runs under; templates and static files beside them."""
