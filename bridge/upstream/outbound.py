"""Outbound HTTP with one total deadline and a size cap, for every peer the bridge calls.

httpx's timeouts bound each network operation: a peer that answers 200 and then sends a byte
every half second never trips a 3 s read timeout, and a body is read whole before anyone can
look at its size. :class:`BoundedTransport` wraps the transport of each outbound client
(Sentifyd, the OpenID providers, the site's who-am-I URL) so that

- one deadline, started when the request is sent, bounds connecting, the response head and
  every chunk of the body; past it the call fails with :class:`httpx.ReadTimeout` (or
  :class:`httpx.ConnectTimeout` before any answer);
- the body is decoded here (``gzip``/``deflate``; any other coding is refused) and counted as
  it streams: past ``max_bytes`` of decoded body the call fails with :class:`AnswerTooLarge`,
  so neither a long body nor a small compressed one that inflates is ever held whole;
- a body that does not decode fails with :class:`httpx.DecodingError`.

All three are :class:`httpx.RequestError` subclasses, which each client already maps to its
own fixed "unavailable" answer.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import ipaddress
import zlib
from collections.abc import AsyncIterator
from typing import Any, TypedDict
from urllib.request import getproxies

import httpx

# What the bridge can decode within its cap; a peer that sends anything else is refused.
ACCEPT_ENCODING = "gzip, deflate"


class AnswerTooLarge(httpx.RequestError):
    """The peer's answer was longer than the bridge reads."""


class _Decoder:
    """Decode one content coding, never producing more than the bytes still allowed."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._zlib: zlib._Decompress | None = None
        self._first = True
        if coding == "gzip":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif coding == "deflate":
            self._zlib = zlib.decompressobj()

    def decode(self, data: bytes, allowed: int) -> bytes:
        if self._zlib is None:
            return data
        try:
            out = self._zlib.decompress(data, allowed + 1)
        except zlib.error:
            if self.coding != "deflate" or not self._first:
                raise
            # "deflate" is often sent raw, without the zlib wrapper (as httpx also allows).
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._zlib.decompress(data, allowed + 1)
        self._first = False
        return out

    def flush(self) -> bytes:
        if self._zlib is None:
            return b""
        if not self._zlib.eof and not self._first:
            raise zlib.error("truncated stream")
        return self._zlib.flush()


class _BoundedStream(httpx.AsyncByteStream):
    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        request: httpx.Request,
        *,
        deadline: float,
        max_bytes: int,
        coding: str,
    ) -> None:
        self.inner = inner
        self.request = request
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.decoder = _Decoder(coding)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self.inner.__aiter__()
        size = 0
        while True:
            try:
                async with asyncio.timeout_at(self.deadline) as scope:
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                if not scope.expired():
                    raise
                raise httpx.ReadTimeout(
                    "the answer did not arrive in time", request=self.request
                ) from exc
            data = self._decode(chunk, self.max_bytes - size)
            size += len(data)
            if size > self.max_bytes:
                raise AnswerTooLarge("the answer is too large", request=self.request)
            if data:
                yield data
        try:
            tail = self.decoder.flush()
        except zlib.error as exc:
            raise httpx.DecodingError("the answer does not decode", request=self.request) from exc
        if size + len(tail) > self.max_bytes:
            raise AnswerTooLarge("the answer is too large", request=self.request)
        if tail:
            yield tail

    def _decode(self, chunk: bytes, allowed: int) -> bytes:
        try:
            return self.decoder.decode(chunk, max(allowed, 0))
        except zlib.error as exc:
            raise httpx.DecodingError("the answer does not decode", request=self.request) from exc

    async def aclose(self) -> None:
        await self.inner.aclose()


class BoundedTransport(httpx.AsyncBaseTransport):
    """Wrap ``inner`` so each request has one total deadline and a capped, decoded body."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, timeout: float, max_bytes: int) -> None:
        self.inner = inner
        self.timeout = timeout
        self.max_bytes = max_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        deadline = asyncio.get_running_loop().time() + self.timeout
        request.headers["Accept-Encoding"] = ACCEPT_ENCODING
        try:
            async with asyncio.timeout_at(deadline) as scope:
                response = await self.inner.handle_async_request(request)
        except TimeoutError as exc:
            if not scope.expired():
                raise
            raise httpx.ConnectTimeout("no answer in time", request=request) from exc
        codings = [
            c.strip().lower()
            for c in response.headers.get("Content-Encoding", "").split(",")
            if c.strip() and c.strip().lower() != "identity"
        ]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "deflate")):
            await response.aclose()
            raise httpx.DecodingError("the answer's content coding is refused", request=request)
        length = response.headers.get("Content-Length", "")
        if not codings and length.isdigit() and int(length) > self.max_bytes:
            await response.aclose()
            raise AnswerTooLarge("the answer is too large", request=request)
        headers = httpx.Headers(response.headers)
        if codings:
            del headers["Content-Encoding"]
            headers.pop("Content-Length", None)
        assert isinstance(response.stream, httpx.AsyncByteStream)  # noqa: S101 - async transport
        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=_BoundedStream(
                response.stream,
                request,
                deadline=deadline,
                max_bytes=self.max_bytes,
                coding=codings[0] if codings else "identity",
            ),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class Bounded(TypedDict):
    """The transports of a bounded client (:func:`bounded`)."""

    transport: httpx.AsyncBaseTransport
    mounts: dict[str, httpx.AsyncBaseTransport | None]


class PeerClientOptions(Bounded):
    """A bounded client of an identity peer (:func:`peer_client_options`)."""

    timeout: float
    follow_redirects: bool
    cookies: http.cookiejar.CookieJar


def bounded(
    transport: httpx.AsyncBaseTransport | None,
    *,
    timeout: float,
    max_bytes: int,
    limits: httpx.Limits | None = None,
) -> Bounded:
    """Keyword arguments for an ``httpx.AsyncClient`` whose every transport is bounded.

    ``transport`` (a test's) or a new real one carries every request; httpx stops reading
    ``HTTP(S)_PROXY`` once it is given a transport, so the proxies the environment names are
    mounted here, each behind the same deadline and cap.
    """
    limits = limits or httpx.Limits()

    def wrap(inner: httpx.AsyncBaseTransport) -> BoundedTransport:
        return BoundedTransport(inner, timeout=timeout, max_bytes=max_bytes)

    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    if transport is None:
        for pattern, proxy in environment_proxies().items():
            mounts[pattern] = (
                None
                if proxy is None
                else wrap(httpx.AsyncHTTPTransport(proxy=proxy, limits=limits))
            )
    return {
        "transport": wrap(transport or httpx.AsyncHTTPTransport(limits=limits)),
        "mounts": mounts,
    }


def environment_proxies() -> dict[str, str | None]:
    """The proxies ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` name, as
    httpx mounts them (None: go direct)."""
    info = getproxies()
    mounts: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        if info.get(scheme):
            url = info[scheme]
            mounts[f"{scheme}://"] = url if "://" in url else f"http://{url}"
    for host in (h.strip() for h in info.get("no", "").split(",")):
        if host == "*":
            return {}
        if not host:
            continue
        if "://" in host:
            mounts[host] = None
            continue
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if isinstance(ip, ipaddress.IPv6Address):
            mounts[f"all://[{host}]"] = None
        elif ip is not None or host.lower() == "localhost":
            mounts[f"all://{host}"] = None
        else:
            mounts[f"all://*{host}"] = None
    return mounts


def peer_client_options(
    transport: httpx.AsyncBaseTransport | None, *, timeout: float, max_bytes: int
) -> PeerClientOptions:
    """Keyword arguments for a client of an identity peer (a provider, the site's who-am-I URL).

    ``timeout`` bounds each call as a whole, body included; the answer is capped at ``max_bytes``;
    no redirect is followed and no cookie kept (one client serves every visitor).
    """
    return {
        **bounded(transport, timeout=timeout, max_bytes=max_bytes),
        "timeout": timeout,
        "follow_redirects": False,
        "cookies": cookieless_jar(),
    }


class _NoCookies(http.cookiejar.CookiePolicy):
    """Keep no cookie from a peer: one client serves every visitor."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: Any) -> bool:
        return False

    def path_return_ok(self, path: str, request: Any) -> bool:
        return False


def cookieless_jar() -> http.cookiejar.CookieJar:
    """Return a cookie jar that never stores or sends a cookie."""
    return http.cookiejar.CookieJar(policy=_NoCookies())
