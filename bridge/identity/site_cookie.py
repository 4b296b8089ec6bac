"""The site's own login cookie: a Flask session or a plain itsdangerous token here, every other
framework's format in :mod:`bridge.identity.cookie_formats`.

The bridge never writes or forwards this cookie; it only verifies it with the site's key.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer
from quart.json.tag import TaggedJSONSerializer

from bridge.errors import BridgeError
from bridge.identity import NO_CLAIMS, Claims, Identity, Method
from bridge.identity.cookie_formats import CookieFormat, open_format
from bridge.identity.fields import claims_of, subject_of
from bridge.observe.incoming import Incoming
from bridge.settings.schema import FlaskCookie, SiteCookie

log = logging.getLogger("bridge.site_cookie")

# Browsers cap a cookie at 4096 bytes; anything longer did not come from the site.
MAX_COOKIE_LENGTH = 4096
VERIFIED_CACHE_SIZE = 4096  # at most ~4096 x 4 KB of cookie values kept


class _Signer(TimestampSigner):
    """itsdangerous's timestamp signer on the bridge's clock (its ``get_timestamp`` seam)."""

    def __init__(self, *args: Any, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def get_timestamp(self) -> int:
        return int(self.clock())


class SiteCookieSource:
    method: Method = "site_cookie"
    remote = False

    def __init__(self, settings: SiteCookie, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        # The other frameworks' formats; Flask and itsdangerous (FlaskCookie) are read here.
        self.format: CookieFormat | None = None
        self._signed: URLSafeTimedSerializer | None = None
        self.max_age = 0
        if not isinstance(settings, FlaskCookie):
            self.format = open_format(settings, clock)
        else:
            self.max_age = settings.max_age
            # itsdangerous wants the newest key last; our config lists it first.
            keys = [key.reveal() for key in reversed(settings.secret_keys)]
            self._signed = self._serializer(settings, keys)
        # Cookie values whose signature was verified, with their signing time and the identity
        # read from them: the key derivation and HMAC checks were an eighth of the token
        # endpoint's time, and a visitor sends the same cookie on every request. Only an
        # exact, fully verified value hits; its age is re-checked on each hit; the keys never
        # change while running. The payload itself is not kept (an idle session's bytes).
        self._verified: dict[str, tuple[Identity | None, int]] = {}

    @property
    def serializer(self) -> URLSafeTimedSerializer:
        """The serializer of a Flask or itsdangerous cookie (what the site signs it with)."""
        if self._signed is None:
            raise TypeError(f"format {self.settings.format!r} is not an itsdangerous cookie")
        return self._signed

    def _serializer(self, settings: FlaskCookie, keys: list[str]) -> URLSafeTimedSerializer:
        if settings.format == "flask":
            # Exactly Flask's SecureCookieSessionInterface: HMAC key derivation, SHA-1, tagged JSON.
            return URLSafeTimedSerializer(
                keys,
                salt=settings.salt,
                serializer=TaggedJSONSerializer(),
                signer=_Signer,
                signer_kwargs={
                    "key_derivation": "hmac",
                    "digest_method": hashlib.sha1,
                    "clock": self.clock,
                },
            )
        return URLSafeTimedSerializer(
            keys, salt=settings.salt, signer=_Signer, signer_kwargs={"clock": self.clock}
        )

    def read(self, value: str | None) -> Claims | None:
        """Return the cookie's verified payload, or None if it is absent, forged or expired."""
        verified = self._verify(value)
        return verified[0] if verified is not None else None

    def identity_of(self, value: str | None) -> Identity | None:
        """Return who the cookie ``value`` says is logged in, verified once per value."""
        if not value:
            return None
        hit = self._verified.get(value)
        if hit is not None:
            # A hit skips the HMAC, not the age: the entry lives as long as the signature would.
            if hit[1] <= int(self.clock()) <= hit[1] + self.max_age:
                return hit[0]
            del self._verified[value]
            return None
        verified = self._verify(value)
        if verified is None:
            return None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        identity = self.identity_from_payload(verified[0])
        self._verified[value] = (identity, verified[1])
        return identity

    def _verify(self, value: str | None) -> tuple[Claims, int] | None:
        """Check the signature and age; return the payload and when it was signed."""
        if not value or len(value) > MAX_COOKIE_LENGTH or self._signed is None:
            return None
        try:
            payload, signed = self._signed.loads(value, max_age=self.max_age, return_timestamp=True)
        except BadData:  # BadSignature, SignatureExpired, and BadPayload (signed, not JSON)
            return None
        except (ValueError, TypeError, KeyError, RecursionError):
            # A validly signed but malformed payload (an unknown tag, JSON nested beyond the
            # stack) is still not a login.
            return None
        if not isinstance(payload, dict):
            return None
        return payload, int(signed.timestamp())

    def identity_from_payload(self, payload: Mapping[str, Any] | None) -> Identity | None:
        if payload is None:
            return None
        subject = subject_of(payload, self.settings.user_field)
        if subject is None:
            return None
        claims = claims_of(payload, self.settings.claim_fields)
        return Identity(subject=subject, method=self.method, claims=claims or NO_CLAIMS)

    async def identify(self, request: Incoming, record: object = None) -> Identity | None:
        try:
            if self.format is not None:
                return self.identity_from_payload(await self.format.read(request.cookies))
            return self.identity_of(request.cookies.get(self.settings.name))
        except BridgeError:
            raise  # the site's session store unavailable (Express's Redis): a 503, not a logout
        except Exception as exc:  # noqa: BLE001 - a value no check foresaw is still no login
            # Not signed in, so the gate counts it per address like any other refusal. The
            # exception's type only: its message could quote the cookie.
            log.warning(
                "site cookie unreadable",
                extra={"fields": {"format": self.settings.format, "error": type(exc).__name__}},
            )
            return None

    async def aclose(self) -> None:
        if self.format is not None:
            await self.format.aclose()

    def login_url(self, next_path: str) -> str:
        return self.settings.login_url.replace("{next}", quote(next_path, safe="/"))
