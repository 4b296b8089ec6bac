"""The suite's leak guard: every secret a test creates, looked for everywhere it must not be.

``tests/conftest.py`` runs one :class:`LeakGuard` around every test (the autouse ``leak_guard``
fixture). It collects, without a test doing anything:

- every :class:`bridge.secret.Secret` built (API keys, client secrets, the bridge's and the
  site's keys, admin and metrics tokens), and the suite's standing secrets (:func:`always`);
- every refresh token and signing key of the stand-in Sentifyd, and its access tokens;
- the OpenID provider's access and refresh tokens (and its ID tokens) as the bridge receives them;
- every handle the token endpoint hands out and every cookie value the bridge sets;
- the site cookies ``support.app.site_cookie`` signs.

It then reads every answer of a bridge app (body and headers), every log record of every logger
(INFO and up, DEBUG for ``bridge.*``), and the text of every exception a bridge app handles, and
fails the test if any secret appears in them plain, URL-encoded, base64 (standard or URL-safe,
at any alignment), hex or JSON-escaped.

Two kinds of value:

- a **secret** (API key, Sentifyd or provider refresh token, client secret, key) may appear
  nowhere;
- a **credential** (a handle, a cookie value, a Sentifyd access token, an ID token) is meant to
  travel in the answer that hands it out, so it may appear in a ``Set-Cookie`` or ``Location``
  header (and a redirect's body, which repeats it), in a 2xx answer of the token endpoint, and
  in a request line httpx logs (the component sends its handle in the query string), and
  nowhere else: never in the bridge's own log records, an exception, an error or another header.

A test that makes a secret of its own registers it with :func:`secret` or :func:`credential`
(``from support.leaks import secret``); text that does not pass through the hooks (a
subprocess's output) is handed over with :func:`scan`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

MIN_LENGTH = 8  # shorter values (an avatar id, a client id) are names, not secrets
ENCODINGS = ("plain", "url", "url+", "base64", "base64url", "hex", "HEX", "json", "json-ascii")
TOKEN_ENDPOINT = "tokens.request_tokens"  # noqa: S105 - an endpoint name

SECRET = "secret"  # noqa: S105 - a kind
CREDENTIAL = "credential"

_standing: dict[str, str] = {}
_current: LeakGuard | None = None


def always(value: str, kind: str = SECRET) -> None:
    """Register a secret every test may meet (a module's constant test key)."""
    _standing[value] = kind


def secret(value: str | bytes | None) -> None:
    """Register a value that must appear in no answer, log record or exception."""
    if _current is not None:
        _current.add(value, SECRET)


def credential(value: str | bytes | None) -> None:
    """Register a value that may travel only in the answer that hands it out."""
    if _current is not None:
        _current.add(value, CREDENTIAL)


def scan(text: str, where: str, *, credentials_allowed: bool = False) -> None:
    """Look for secrets in ``text`` (a subprocess's log, say) when the test ends."""
    if _current is not None:
        _current.texts.append(Seen(where, text, credentials_allowed))


def _base64_cores(data: bytes, alphabet: str) -> Iterator[str]:
    """The part of ``data``'s base64 that is the same wherever ``data`` sits in a longer input."""
    encode = base64.b64encode if alphabet == "std" else base64.urlsafe_b64encode
    for offset, skip in ((0, 0), (1, 2), (2, 3)):
        encoded = encode(b"\x00" * offset + data).decode()
        whole = (offset + len(data)) // 3 * 4
        yield encoded[skip:whole]


def variants(value: str) -> dict[str, str]:
    """``value`` as each encoding would show it (encoding name -> text)."""
    data = value.encode("utf-8")
    out = {
        "plain": value,
        "url": quote(value, safe=""),
        "url+": quote_plus(value, safe=""),
        "hex": binascii.hexlify(data).decode(),
        "HEX": binascii.hexlify(data).decode().upper(),
        "json": json.dumps(value, ensure_ascii=False)[1:-1],
        "json-ascii": json.dumps(value)[1:-1],
    }
    for name, alphabet in (("base64", "std"), ("base64url", "url")):
        for index, core in enumerate(_base64_cores(data, alphabet)):
            out[f"{name}@{index}"] = core
    return {name: text for name, text in out.items() if len(text) >= MIN_LENGTH}


@dataclass
class Seen:
    """One text the guard will read: where it was seen, and whether credentials may be in it."""

    where: str
    text: str
    credentials_allowed: bool


@dataclass
class LeakGuard:
    values: dict[str, str] = field(default_factory=dict)  # value -> kind
    texts: list[Seen] = field(default_factory=list)

    def add(self, value: str | bytes | None, kind: str) -> None:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not value or len(value) < MIN_LENGTH:
            return
        if self.values.get(value) != SECRET:  # a secret stays a secret
            self.values[value] = kind

    def leaks(self) -> list[str]:
        """One line per leak: where, which kind of value, which encoding (never the value)."""
        # Two long haystacks instead of one search per text: a property test leaves thousands.
        sep = "\x00"
        everything = sep.join(t.text for t in self.texts)
        guarded = sep.join(t.text for t in self.texts if not t.credentials_allowed)
        found: set[str] = set()
        for value, kind in {**_standing, **self.values}.items():
            haystack = everything if kind == SECRET else guarded
            for name, text in variants(value).items():
                if text not in haystack:
                    continue
                for item in self.texts:
                    if text in item.text and (kind == SECRET or not item.credentials_allowed):
                        found.add(f"{kind} {value[:4]}... {name.split('@')[0]} in {item.where}")
        return sorted(found)


class _Records(logging.Handler):
    def __init__(self, guard: LeakGuard) -> None:
        super().__init__(logging.DEBUG)
        self.guard = guard

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.getMessage(), repr(getattr(record, "fields", ""))]
        if record.exc_info:
            parts.append("".join(traceback.format_exception(*record.exc_info)))
        # httpx logs each request line of every client, the tests' own "browsers" included, and
        # the component sends its handle in the query string: a credential may be there.
        request_line = record.name == "httpx" and record.msg.startswith("HTTP Request:")
        self.guard.texts.append(Seen(f"log {record.name}", "\n".join(parts), request_line))


def exception_text(error: BaseException) -> str:
    """An exception's text with its whole chain (``raise ... from``, and implicit context)."""
    return "".join(traceback.format_exception(error))


def register_exception(guard: LeakGuard, error: BaseException) -> None:
    guard.texts.append(Seen(f"exception {type(error).__name__}", exception_text(error), False))


def response_texts(
    headers: Iterable[tuple[str, str]], body: str, *, endpoint: str | None, status: int
) -> list[Seen]:
    """Split an answer into what may carry credentials and what may not."""
    carriers = ("set-cookie", "location")
    texts = [
        Seen(f"response header {name}", value, name.lower() in carriers) for name, value in headers
    ]
    # A redirect's body repeats its Location (werkzeug's "You should be redirected" page).
    hands_out = (endpoint == TOKEN_ENDPOINT and 200 <= status < 300) or 300 <= status < 400
    # The demo's stand-in for a site writes its double-submit form token in its own page.
    hands_out = hands_out or (endpoint or "").startswith("demo_site.")
    texts.append(Seen(f"response body ({endpoint}, {status})", body, hands_out))
    return texts


@contextmanager
def guarding() -> Iterator[LeakGuard]:
    """Install the guard's log handler for one test; the caller installs the other hooks."""
    global _current
    guard = LeakGuard()
    handler = _Records(guard)
    root = logging.getLogger()
    bridge = logging.getLogger("bridge")
    levels = (root.level, bridge.level)
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, logging.INFO))
    bridge.setLevel(logging.DEBUG)
    _current = guard
    try:
        yield guard
    finally:
        _current = None
        root.removeHandler(handler)
        root.setLevel(levels[0])
        bridge.setLevel(levels[1])


def current() -> LeakGuard | None:
    return _current


def register_answer(guard: LeakGuard, response: Any, body: str, endpoint: str | None) -> None:
    """Collect the credentials an answer hands out (handles, cookie values), then its text."""
    for header in response.headers.getlist("Set-Cookie"):
        guard.add(header.split(";", 1)[0].partition("=")[2], CREDENTIAL)
    if endpoint == TOKEN_ENDPOINT and response.status_code == 200:
        try:
            tokens = json.loads(body).get("tokens", {})
        except (ValueError, AttributeError):
            tokens = {}
        guard.add(tokens.get("refreshToken"), CREDENTIAL)
        guard.add(tokens.get("accessToken"), CREDENTIAL)
    guard.texts.extend(
        response_texts(
            list(response.headers.items()), body, endpoint=endpoint, status=response.status_code
        )
    )


__all__ = [
    "ENCODINGS",
    "LeakGuard",
    "Seen",
    "always",
    "credential",
    "current",
    "exception_text",
    "guarding",
    "register_answer",
    "register_exception",
    "scan",
    "secret",
    "variants",
]
