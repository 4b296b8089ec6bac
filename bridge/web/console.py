"""The operator console's own sign-in: an admin token exchanged once for a console session.

The token is posted once to the sign-in form and never kept: the browser gets a random console
session id in a cookie of the console's own (``HttpOnly``, ``SameSite=Strict``, ``Secure`` and
``__Host-`` over https), and the store keeps, under a hash of that id, the operator's name and
when the session ends (``[admin] console_session_ttl``); it ends sooner if the operator's
name is no longer among the configured admin tokens. Nothing a page's script can read holds
a credential: the form token that guards the console's POSTs is an HMAC of the session's hashed
id (:mod:`bridge.web.csrf`), useless without the cookie.
"""

from __future__ import annotations

import hashlib
import re
import secrets

import msgspec
from quart import Request, Response

from bridge.web.csrf import check_csrf_token, csrf_token
from bridge.wiring import Bridge

COOKIE_NAME = "sentifyd_bridge_console"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


class ConsoleSession(msgspec.Struct, frozen=True):
    """A signed-in operator: who, and until when."""

    operator: str
    created_at: float
    expires_at: float


class SignedIn(msgspec.Struct, frozen=True):
    """A request's console session and its hashed id (what the store and the CSRF token use)."""

    id: str
    session: ConsoleSession


class ConsoleSessions:
    def __init__(self, bridge: Bridge) -> None:
        self.store = bridge.store
        self.clock = bridge.clock
        self.operators = {token.name for token in bridge.settings.admin_tokens}
        self.keys = bridge.settings.secret_keys
        self.ttl = bridge.settings.admin.console_session_ttl
        self.secure = bridge.settings.server.is_https
        # __Host- needs Path=/; over plain http (a loopback test) the cookie stays under /admin.
        self.cookie_name = f"__Host-{COOKIE_NAME}" if self.secure else COOKIE_NAME
        self.cookie_path = "/" if self.secure else bridge.url("/admin")

    @staticmethod
    def hashed(token: str) -> str:
        return hashlib.sha256(("console:" + token).encode()).hexdigest()[:32]

    def key(self, session_id: str) -> str:
        return self.store.key("console", session_id)

    async def start(self, operator: str) -> tuple[str, SignedIn]:
        """Store a new console session; return the cookie's value and the session."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = ConsoleSession(operator, round(now, 3), round(now + self.ttl, 3))
        signed_in = SignedIn(self.hashed(token), session)
        await self.store.set(self.key(signed_in.id), msgspec.to_builtins(session), self.ttl)
        return token, signed_in

    async def current(self, request: Request) -> SignedIn | None:
        """Return the request's live console session, if it has one."""
        token = request.cookies.get(self.cookie_name, "")
        if not _TOKEN_RE.match(token):
            return None
        session_id = self.hashed(token)
        raw = await self.store.get(self.key(session_id))
        if raw is None:
            return None
        try:
            session = msgspec.convert(raw, ConsoleSession)
        except msgspec.ValidationError:
            return None
        # The store's TTL runs on the real clock; this keeps an injected clock honest too.
        if session.expires_at <= self.clock():
            return None
        if session.operator not in self.operators:
            return None  # their token was taken out of the configuration (and reloaded)
        return SignedIn(session_id, session)

    async def end(self, signed_in: SignedIn) -> None:
        await self.store.delete(self.key(signed_in.id))

    def csrf(self, signed_in: SignedIn) -> str:
        return csrf_token(self.keys, "console:" + signed_in.id)

    def csrf_ok(self, signed_in: SignedIn, token: str | None) -> bool:
        return check_csrf_token(self.keys, "console:" + signed_in.id, token)

    def set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            self.cookie_name,
            token,
            max_age=self.ttl,
            path=self.cookie_path,
            secure=self.secure,
            httponly=True,
            samesite="Strict",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            self.cookie_name,
            path=self.cookie_path,
            secure=self.secure,
            httponly=True,
            samesite="Strict",
        )
