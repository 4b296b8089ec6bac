"""The bridge's exceptions.

One root, :class:`BridgeError`. Errors that reach a client know their HTTP status and a stable
JSON ``error`` code; one handler in :mod:`bridge.app` turns them into JSON. The signals branch
is raised and caught inside the bridge and is never an answer by itself.

    BridgeError
    ├── ConfigError                     (start-up only; never an HTTP answer; a ValueError)
    ├── Signal                          (internal; caught where it is meant to be)
    │   ├── TokenRejected               a token or provider answer failed a check (+ reason)
    │   ├── RefreshRefused              the provider refused to renew a session's tokens
    │   ├── LoginEnded                  an identity source knows the login is over (+ reason)
    │   └── SessionGone                 the session ended while a request worked on it
    └── HTTPError
        ├── BadRequest                  400 bad_request
        │   ├── LoginFailed             400 login_failed
        │   └── InvalidLogoutToken      400 invalid_logout_token
        ├── RequestTooLarge             413/414 request_too_large
        ├── LoginRequired               401 login_required (+ login_url)
        ├── InvalidRefreshToken         401 invalid_refresh_token
        ├── SessionRevoked              401 session_revoked
        ├── Unauthorized                401 unauthorized (admin API, metrics; + WWW-Authenticate)
        ├── ConsoleSignInRequired       401 console_sign_in_required (the operator console)
        ├── Forbidden                   403 forbidden
        ├── CrossSiteRequest            403 cross_site_request
        ├── InvalidCSRFToken            403 invalid_csrf_token
        ├── NotFound                    404 not_found
        │   ├── UnknownAvatar           404 unknown_avatar
        │   ├── UnknownProvider         404 unknown_provider
        │   └── UnknownSession          404 unknown_session (not one of the visitor's sessions)
        ├── MethodNotAllowed            405 method_not_allowed
        ├── RateLimited                 429 rate_limited (+ Retry-After)
        ├── StoreUnavailable            503 store_unavailable
        │   └── LeaseLost               503 store_unavailable (a lock holder's lease lapsed)
        ├── UpstreamBusy                503 upstream_busy (+ Retry-After)
        ├── IdentityProviderUnavailable 503 identity_provider_unavailable
        └── UpstreamError
            ├── UpstreamUnavailable     502 upstream_unavailable
            ├── UpstreamRejected        502 upstream_rejected (+ upstream_status)
            └── UpstreamTimeout         504 upstream_timeout

Messages are fixed sentences written here, never text taken from a request or from Sentifyd, so
no secret can travel through an error.
"""

from __future__ import annotations

from typing import TypedDict, Unpack


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class ConfigError(BridgeError, ValueError):
    """A setting is missing or unsafe; start-up stops with this one-line message.

    A ValueError too: raised inside a settings value or structure, msgspec adds the setting's
    path (``$.session.idle_timeout``), which the loader turns into the dotted name.
    """


class Signal(BridgeError):
    """Raised and caught inside the bridge; never turned into an answer as it is."""


class TokenRejected(Signal):
    """A token or provider answer failed a check; ``reason`` names which (for the log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RefreshRefused(Signal):
    """The provider refused to renew a session's tokens: the provider session is over."""


class LoginEnded(Signal):
    """A source knows the session's login is over, and why (e.g. the provider refused a refresh)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionGone(Signal):
    """The session ended while this request worked on it (revoked, logged out, expired)."""


class ErrorExtra(TypedDict, total=False):
    """What an error's answer may say besides its code and message."""

    login_url: str  # LoginRequired
    provider_error: str  # LoginFailed: the provider's error code (RFC 6749's, else "other")
    retry_after: int  # the answers with a Retry-After
    upstream_status: int  # UpstreamRejected


class ErrorBody(ErrorExtra):
    """An error's JSON answer: its code and message first, then what it adds."""

    error: str
    message: str


class HTTPError(BridgeError):
    status: int = 500
    code: str = "internal_error"
    message: str = "The bridge could not answer this request."

    def __init__(self, message: str | None = None, **extra: Unpack[ErrorExtra]) -> None:
        super().__init__(message or self.message)
        if message:
            self.message = message
        self.extra = extra

    def body(self) -> ErrorBody:
        return {"error": self.code, "message": self.message, **self.extra}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(HTTPError):
    status = 400
    code = "bad_request"
    message = "The request is malformed."


class LoginFailed(BadRequest):
    code = "login_failed"
    message = "The sign-in could not be completed; please start again."


class InvalidLogoutToken(BadRequest):
    code = "invalid_logout_token"
    message = "The logout token is not valid."


class RequestTooLarge(HTTPError):
    status = 413
    code = "request_too_large"
    message = "The request is too large."


class LoginRequired(HTTPError):
    status = 401
    code = "login_required"
    message = "Sign in to use the avatar."

    def __init__(self, login_url: str | None = None) -> None:
        extra: ErrorExtra = {"login_url": login_url} if login_url else {}
        super().__init__(None, **extra)
        self.login_url = login_url


class InvalidRefreshToken(HTTPError):
    status = 401
    code = "invalid_refresh_token"
    message = "The refresh token is not valid for this session."


class SessionRevoked(HTTPError):
    status = 401
    code = "session_revoked"
    message = "An administrator ended this account's avatar sessions; try again later."


class Unauthorized(HTTPError):
    status = 401
    code = "unauthorized"
    # The same words for a missing and a wrong token: no hint of which it was.
    message = "A valid bearer token is required."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="sentifyd-bridge"'}


class ConsoleSignInRequired(HTTPError):
    status = 401
    code = "console_sign_in_required"
    message = "Sign in to the operator console again; the console session has ended."


class Forbidden(HTTPError):
    status = 403
    code = "forbidden"
    message = "This account may not use this avatar."


class CrossSiteRequest(HTTPError):
    status = 403
    code = "cross_site_request"
    message = "This request is accepted from this site's own pages only."


class InvalidCSRFToken(HTTPError):
    status = 403
    code = "invalid_csrf_token"
    message = "This form has expired or did not come from this site; reload the page."


class NotFound(HTTPError):
    status = 404
    code = "not_found"
    message = "There is nothing here."


class UnknownAvatar(NotFound):
    code = "unknown_avatar"
    message = "No avatar of that name is configured."


class UnknownProvider(NotFound):
    code = "unknown_provider"
    message = "No sign-in provider of that name is configured."


class UnknownSession(NotFound):
    code = "unknown_session"
    message = "None of your sessions has that reference; reload the page."


class MethodNotAllowed(HTTPError):
    status = 405
    code = "method_not_allowed"
    message = "This method is not allowed here."

    def __init__(self, allowed: list[str] | None = None) -> None:
        super().__init__()
        self.allowed = allowed or []

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)} if self.allowed else {}


class _RetryAfter(HTTPError):
    """An answer that says, in seconds, when to try again (body and ``Retry-After``)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(None, retry_after=retry_after)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimited(_RetryAfter):
    status = 429
    code = "rate_limited"
    message = "Too many token requests; try again later."


class StoreUnavailable(HTTPError):
    status = 503
    code = "store_unavailable"
    message = "The session store is unavailable; try again shortly."

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class LeaseLost(StoreUnavailable):
    """The session's lock lapsed while its holder worked; what it meant to write was dropped."""


class UpstreamBusy(_RetryAfter):
    status = 503
    code = "upstream_busy"
    message = "The avatar's Sentifyd logins are spent for now; try again shortly."


class IdentityProviderUnavailable(HTTPError):
    status = 503
    code = "identity_provider_unavailable"
    message = "The sign-in service could not be reached; try again shortly."

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class UpstreamError(HTTPError):
    status = 502


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"
    message = "Sentifyd could not be reached or gave an unusable answer."


class UpstreamRejected(UpstreamError):
    code = "upstream_rejected"
    message = "Sentifyd refused the request."

    def __init__(self, upstream_status: int) -> None:
        super().__init__(None, upstream_status=upstream_status)
        self.upstream_status = upstream_status


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    message = "Sentifyd did not answer in time."
