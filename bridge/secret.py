"""Secrets: a string type that refuses to be formatted, and the random values a request draws.

``str()``, ``repr()`` and f-strings of a :class:`Secret` all give a mask, so a secret cannot
reach a log line, an error message or ``check-config`` output by accident; ``reveal()`` is the
one way out.

Handles, session tokens, request ids and nonces are drawn by :func:`token_urlsafe`,
:func:`token_hex` and :func:`token_bytes`: the same values as :mod:`secrets` gives, from
OpenSSL's CSPRNG through :func:`ssl.RAND_bytes` ("cryptographically strong pseudo-random
bytes", the generator TLS keys come from; seeded from the operating system, and reseeded in a
forked child) instead of :func:`os.urandom`. ``os.urandom`` is a system call that lets go of
the GIL, and under a server whose own thread waits for the GIL (granian runs its I/O in one)
every such release hands the interpreter over in the middle of a request: three per token
request. With a thread busy beside it, ``os.urandom(32)`` took 310 us a call here,
``ssl.RAND_bytes(32)`` 1.3 us (README, "Performance").
"""

from __future__ import annotations

import base64
import hmac
import ssl


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __format__(self, spec: str) -> str:
        return "********"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return hmac.compare_digest(self._value.encode(), other._value.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def token_bytes(nbytes: int) -> bytes:
    """``nbytes`` random bytes."""
    return ssl.RAND_bytes(nbytes)


def token_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as ``2 * nbytes`` hex digits."""
    return ssl.RAND_bytes(nbytes).hex()


def token_urlsafe(nbytes: int) -> str:
    """``nbytes`` random bytes as URL-safe base64 without padding, as ``secrets`` writes it."""
    return base64.urlsafe_b64encode(ssl.RAND_bytes(nbytes)).rstrip(b"=").decode("ascii")
