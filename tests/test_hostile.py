"""Hostile input, generated: arbitrary cookies, handles, query strings, headers and bodies thrown
at the token endpoint, the avatar pages, the demo's login, and the SSO callback, logout and
back-channel logout.

The properties: never a 5xx; every token-endpoint refusal is JSON with a stable ``error`` code;
no answer carries a secret; and a request without valid credentials changes nothing stored,
neither a value nor its expiry, while the bridge's clock moves between requests.
(``tests/test_hostile_live.py`` runs the same kinds of requests over real sockets.)
Examples are derandomized and the example database is off, so CI runs the same cases every time.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart import Quart
from werkzeug.datastructures import Headers

from bridge.doubles.demo import CSRF_COOKIE, create_demo_app
from support.app import Clock, bridge_of, login, site_cookie
from support.config import API_KEY, PREMIUM_API_KEY, PUBLIC_URL, make_settings
from support.oidc import (
    ControlledProvider,
    b64,
    make_sso_app,
    query_of,
    session_of,
    sign_in,
)

BRIDGE_COOKIE = "sentifyd_bridge"
SITE_COOKIE = "session"
ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
LOGIN_PREFIX = "https://shop.example.com/login?next="  # the tests' configured site login

HOSTILE = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    # One app (and its store) serves every example of a test: that is the point, since each
    # example must leave the store as it found it.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies ------------------------------------------------------------------------------

TOKEN_CHARS = string.ascii_letters + string.digits + "-_"
# What an HTTP/1.1 header value may carry (visible ASCII, space, tab, obs-text): anything else
# is refused by the ASGI server before the app sees it.
HEADER_VALUE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
    | st.just("\t"),
    max_size=200,
)
HEADER_NAME = st.text(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1)
# Parsed by the ASGI server, not the app (or set by each test itself).
SERVER_HEADERS = {"content-length", "transfer-encoding", "host", "cookie", "connection"}
INTERESTING_HEADERS = [
    "Origin",
    "Sec-Fetch-Site",
    "Sec-Fetch-Mode",
    "Referer",
    "Content-Type",
    "Accept",
    "Authorization",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "Forwarded",
    "X-Real-IP",
]
headers_st = st.dictionaries(
    st.sampled_from(INTERESTING_HEADERS)
    | HEADER_NAME.filter(lambda n: n.lower() not in SERVER_HEADERS),
    st.sampled_from(
        ["http://127.0.0.1:8000", "same-origin", "cross-site", "none", "null", "application/json"]
    )
    | HEADER_VALUE,
    max_size=5,
)

handle_st = st.one_of(
    st.text(TOKEN_CHARS, min_size=43, max_size=43),  # well-formed, but never issued
    st.text(max_size=300),  # anything at all, up to beyond the length cap
    st.sampled_from(
        [
            " ",
            "null",
            "undefined",
            "[object Object]",
            "A" * 43 + "=",
            "A" * 43 + "\n",
            "../../etc/passwd",
            "\x00" * 43,
            "\u202e" * 43,
            "%00",
        ]
    ),
)

QUERY_PIECES = st.sampled_from(
    ["%", "%ff", "%00", "%0a", "%zz", "%C3%A9", "%e2%80%ae", "&", "=", "+", ";", "refreshToken="]
)
QUERY_CHARS = string.ascii_letters + string.digits + "-._~!$'()*+,;=:@/?&="
raw_query_st = st.one_of(
    st.lists(st.text(QUERY_CHARS, max_size=20) | QUERY_PIECES, max_size=12).map("".join),
    st.integers(4000, 5000).map(lambda n: "pad=" + "x" * n),  # around the 4 KB cap
)

json_st = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
json_body_st = json_st | st.fixed_dictionaries({"refreshToken": json_st})
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "text/plain",
    "application/json; charset=utf-16",
]


@dataclass
class Body:
    content_type: str | None
    data: bytes


# Bytes that are not what their declared type promises: not UTF-8, not JSON, not a form.
odd_bytes_st = st.one_of(
    st.binary(min_size=1, max_size=60),
    st.binary(max_size=30).map(lambda b: b"\xff" + b),
    st.sampled_from([b"\x80", b"\xef\xbb", b'{"refreshToken": "\xff"}', b"\x00", b"--xyz--"]),
)
mismatched_body_st = st.builds(
    Body, st.sampled_from(["application/json"] * 3 + CONTENT_TYPES), odd_bytes_st
)
body_st = st.one_of(
    mismatched_body_st,
    mismatched_body_st,  # twice: the likeliest way to trip a parser
    st.builds(Body, HEADER_VALUE | st.none(), st.binary(max_size=600)),
    st.builds(
        Body, st.just("application/json"), json_body_st.map(lambda v: json.dumps(v).encode())
    ),
    st.builds(
        Body,
        st.just("application/x-www-form-urlencoded"),
        st.dictionaries(st.text(max_size=15) | st.just("refreshToken"), st.text(max_size=60)).map(
            lambda d: urlencode(d).encode()
        ),
    ),
    st.just(Body("application/json", b"{" * 70_000)),  # beyond the 64 KB body cap
)

cookie_name_st = st.sampled_from(
    [SITE_COOKIE, BRIDGE_COOKIE, f"__Host-{BRIDGE_COOKIE}", "shop_session", CSRF_COOKIE]
) | st.text(TOKEN_CHARS, min_size=1, max_size=12)


@dataclass
class Valid:
    """A signed-in visitor's real credentials, for building near-misses of them."""

    site: str
    bridge: str
    handle: str


@st.composite
def near_miss(draw: st.DrawFn, valid: str) -> str:
    """``valid`` with one change that must make it worthless: a character replaced (never the
    last, whose low bits a base64 decoder may ignore), cut short, or padded."""
    kind = draw(st.sampled_from(["replace", "truncate", "append", "prepend"]))
    if kind == "replace":
        at = draw(st.integers(0, len(valid) - 2))
        char = draw(st.sampled_from(TOKEN_CHARS + ".").filter(lambda c: c != valid[at]))
        return valid[:at] + char + valid[at + 1 :]
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    extra = draw(st.text(TOKEN_CHARS + ".", min_size=1, max_size=8))
    return valid + extra if kind == "append" else extra + valid


def forged_cookies(valid: Valid) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Cookies without a valid credential: near misses of the real ones in their own slots,
    the real handle where a cookie should be, and anything at all under any name."""
    site = HEADER_VALUE | near_miss(valid.site) | st.just(valid.handle)
    bridge = st.text(TOKEN_CHARS, min_size=43, max_size=43) | near_miss(valid.bridge)
    return st.lists(
        st.tuples(st.just(SITE_COOKIE), site)
        | st.tuples(st.sampled_from([BRIDGE_COOKIE, f"__Host-{BRIDGE_COOKIE}"]), bridge)
        | st.tuples(cookie_name_st, HEADER_VALUE | st.just(valid.handle)),
        max_size=4,
    )


def cookie_header(pairs: list[tuple[str, str]]) -> str:
    return "; ".join(f"{name}={value}" for name, value in pairs)


# --- fixtures and checks -------------------------------------------------------------------


@pytest.fixture
async def app(make_app: Callable[..., Quart]) -> AsyncIterator[Quart]:
    """The tests' app without rate limits: hundreds of requests from one client and one session
    are the point here, and a 429 would stop them short of the code under test
    (``tests/test_limits.py`` covers the limits)."""
    application = make_app(make_settings({"limits": {"per_session": "off", "per_ip": "off"}}))
    async with application.test_app():
        yield application


@pytest.fixture
async def signed_in(app: Quart) -> Valid:
    """Start one real session, so that the store holds something a request could disturb."""
    client = app.test_client()
    login(client, app, "alice", email="alice@example.com", groups=["customers"])
    response = await client.get("/request_tokens")
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    name, _, value = cookie.partition("=")
    assert name == BRIDGE_COOKIE and value
    body = await response.get_json()
    return Valid(
        site=site_cookie(app, "alice", email="alice@example.com", groups=["customers"]),
        bridge=value,
        handle=body["tokens"]["refreshToken"],
    )


def snapshot(app: Quart) -> dict[str, Any]:
    """Every stored value with its expiry (the memory store's deadline for the key)."""
    store: Any = bridge_of(app).store
    return {key: (value, store.expiry(key)) for key, value in store.snapshot().items()}


def no_secrets(fake_state: Any, text: str) -> None:
    for secret in [API_KEY, PREMIUM_API_KEY, *fake_state.issued_refresh_tokens]:
        assert secret not in text


async def send(
    app: Quart,
    path: str,
    *,
    method: str = "GET",
    cookies: list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    body: Body | None = None,
) -> tuple[int, Headers, bytes]:
    """Send a request exactly as given: raw path and query, raw Cookie header, raw body."""
    all_headers = Headers(headers or {})
    if cookies:
        all_headers["Cookie"] = cookie_header(cookies)
    data = None
    if body is not None:
        data = body.data
        if body.content_type is not None:
            all_headers["Content-Type"] = body.content_type
    clock = bridge_of(app).clock
    if isinstance(clock, Clock):
        # Time passes between requests: a refused request that re-saved a session would store
        # a new last-seen time and a new expiry, and the snapshot would show it.
        clock.advance(3)
    client = app.test_client(use_cookies=False)
    response = await client.open(path, method=method, headers=all_headers, data=data)
    return response.status_code, response.headers, await response.get_data()


def assert_json_refusal(status: int, headers: Headers, data: bytes) -> dict[str, Any]:
    assert 400 <= status < 500, (status, data[:300])
    assert headers["Content-Type"].startswith("application/json"), headers["Content-Type"]
    body = json.loads(data)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert ERROR_CODE.match(body["error"]), body
    assert headers["Cache-Control"] == "no-store"
    return body


# --- the token endpoint ----------------------------------------------------------------------


@HOSTILE
@given(data=st.data())
async def test_token_endpoint_without_credentials_refuses_and_changes_nothing(
    app: Quart, signed_in: Valid, fake_state: Any, data: st.DataObject
) -> None:
    """Forged cookies, odd queries, headers and bodies, at the endpoint's real paths."""
    method = data.draw(st.sampled_from(["GET", "POST"]))
    avatar = data.draw(st.sampled_from(["", "/premium"]))
    query = data.draw(raw_query_st | st.just(""))
    cookies = data.draw(forged_cookies(signed_in))
    headers = data.draw(headers_st)
    body = data.draw(body_st) if method == "POST" else None
    path = f"/request_tokens{avatar}" + (f"?{query}" if query else "")

    before = snapshot(app)
    status, response_headers, raw = await send(
        app, path, method=method, cookies=cookies, headers=headers, body=body
    )
    error = assert_json_refusal(status, response_headers, raw)["error"]
    if status == 401:
        assert error in {"login_required", "invalid_refresh_token"}
    no_secrets(fake_state, raw.decode("utf-8", "replace") + str(response_headers))
    assert snapshot(app) == before


@HOSTILE
@given(data=st.data())
async def test_token_endpoint_odd_paths_and_methods_refuse_and_change_nothing(
    app: Quart, signed_in: Valid, data: st.DataObject
) -> None:
    avatar = data.draw(
        st.sampled_from(["", "/premium", "/ghost", "/", "//", "/premium/x", "/..", "/%00"])
        | st.text(max_size=30).map(lambda s: "/" + quote(s, safe=""))
    )
    method = data.draw(
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"])
    )
    cookies = data.draw(forged_cookies(signed_in))
    before = snapshot(app)
    status, headers, raw = await send(
        app, f"/request_tokens{avatar}", method=method, cookies=cookies
    )
    if method in ("HEAD", "OPTIONS"):
        assert status < 500 and (method == "OPTIONS" or status >= 400), status
    else:
        assert_json_refusal(status, headers, raw)
    assert snapshot(app) == before


@HOSTILE
@given(data=st.data())
async def test_refresh_with_a_bad_handle_refuses_and_changes_nothing(
    app: Quart, signed_in: Valid, fake_state: Any, data: st.DataObject
) -> None:
    """A signed-in visitor's own cookies, with any handle but the one they hold."""
    handle = data.draw(
        (handle_st | near_miss(signed_in.handle)).filter(lambda h: h not in ("", signed_in.handle))
    )
    extra = data.draw(
        st.dictionaries(
            st.text(max_size=10).filter(lambda k: k != "refreshToken"),
            st.text(max_size=40),
            max_size=3,
        )
    )
    headers = data.draw(headers_st)
    via_body = data.draw(st.booleans())
    avatar = data.draw(st.sampled_from(["", "/premium"]))
    cookies = [(SITE_COOKIE, signed_in.site), (BRIDGE_COOKIE, signed_in.bridge)]
    if via_body:
        body = Body("application/json", json.dumps({"refreshToken": handle}).encode())
        path, method = (
            f"/request_tokens{avatar}" + (f"?{urlencode(extra)}" if extra else ""),
            "POST",
        )
    else:
        body = None
        path, method = (
            f"/request_tokens{avatar}?" + urlencode({"refreshToken": handle, **extra}),
            "GET",
        )

    before = snapshot(app)
    status, response_headers, raw = await send(
        app, path, method=method, cookies=cookies, headers=headers, body=body
    )
    error = assert_json_refusal(status, response_headers, raw)["error"]
    assert error in {
        "invalid_refresh_token",
        "bad_request",
        "request_too_large",
        "cross_site_request",
    }, error
    no_secrets(fake_state, raw.decode("utf-8", "replace") + str(response_headers))
    assert snapshot(app) == before


@HOSTILE
@given(data=st.data())
async def test_signed_in_visitor_with_odd_requests_never_gets_a_5xx(
    app: Quart, signed_in: Valid, fake_state: Any, data: st.DataObject
) -> None:
    """Valid logins (including validly signed cookies with odd payloads), anything else."""
    payload = data.draw(
        st.fixed_dictionaries(
            {"user_id": json_st | st.text(min_size=1, max_size=20)},
            optional={"groups": json_st, "email": json_st, "email_verified": json_st},
        )
    )
    site = site_cookie(app, payload.pop("user_id"), **payload)
    cookies = [(SITE_COOKIE, site)]
    if data.draw(st.booleans()):
        cookies.append((BRIDGE_COOKIE, signed_in.bridge))
    query = data.draw(raw_query_st | st.just(""))
    method = data.draw(st.sampled_from(["GET", "POST"]))
    body = data.draw(body_st) if method == "POST" else None
    avatar = data.draw(st.sampled_from(["", "/premium", "/ghost"]))
    path = f"/request_tokens{avatar}" + (f"?{query}" if query else "")

    status, response_headers, raw = await send(
        app, path, method=method, cookies=cookies, headers=data.draw(headers_st), body=body
    )
    if status == 200:
        answer = json.loads(raw)
        assert set(answer) == {"tokens", "avatarParameters"}
    else:
        assert_json_refusal(status, response_headers, raw)
    no_secrets(fake_state, raw.decode("utf-8", "replace") + str(response_headers))


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("data", [b"\x80", b'{"refreshToken": "\xff"}', b"\xef\xbb"])
async def test_json_body_that_is_not_utf8_is_400(
    app: Quart, signed_in: Valid, signed: bool, data: bytes
) -> None:
    """Found by the properties above: the body's UTF-8 error escaped ``get_json(silent=True)``."""
    cookies = [(SITE_COOKIE, signed_in.site), (BRIDGE_COOKIE, signed_in.bridge)] if signed else []
    before = snapshot(app)
    status, headers, raw = await send(
        app, "/request_tokens", method="POST", cookies=cookies, body=Body("application/json", data)
    )
    assert status == 400
    assert assert_json_refusal(status, headers, raw)["error"] == "bad_request"
    assert snapshot(app) == before


# --- the avatar pages ------------------------------------------------------------------------


@HOSTILE
@given(data=st.data())
async def test_avatar_page_without_credentials_sends_to_login_and_changes_nothing(
    app: Quart, signed_in: Valid, fake_state: Any, data: st.DataObject
) -> None:
    page = data.draw(
        st.sampled_from(["/", "/avatars/default", "/avatars/premium", "/avatars/ghost"])
        | st.text(max_size=30).map(lambda s: "/avatars/" + quote(s, safe=""))
    )
    query = data.draw(raw_query_st | st.just(""))
    cookies = data.draw(forged_cookies(signed_in))

    before = snapshot(app)
    status, headers, raw = await send(
        app, page + (f"?{query}" if query else ""), cookies=cookies, headers=data.draw(headers_st)
    )
    assert status < 500, (status, raw[:300])
    if status == 302:
        assert headers["Location"].startswith(LOGIN_PREFIX), headers["Location"]
        assert headers["Location"][len(LOGIN_PREFIX) :] in (
            "/",
            "/avatars/default",
            "/avatars/premium",
        )
    else:
        assert_json_refusal(status, headers, raw)
    no_secrets(fake_state, raw.decode("utf-8", "replace") + str(headers))
    assert snapshot(app) == before


# --- the demo's login ------------------------------------------------------------------------


@pytest.fixture
async def demo() -> AsyncIterator[Quart]:
    application = create_demo_app(port=8000)
    async with application.test_app():
        yield application


def stays_on_site(location: str) -> bool:
    """Whether a browser at the demo would stay on the demo's origin following ``location``."""
    base = "http://127.0.0.1:8000/demo/login"
    if any(ord(c) < 0x21 or c == "\\" for c in location):
        return False
    target = urlsplit(urljoin(base, location))
    return (target.scheme, target.netloc) == ("http", "127.0.0.1:8000")


@HOSTILE
@given(data=st.data())
async def test_demo_login_form_never_fails_and_never_leaves_the_site(
    demo: Quart, data: st.DataObject
) -> None:
    nxt = data.draw(HEADER_VALUE | st.sampled_from(["//evil.example", "/\\evil.example", "/%2F/x"]))
    cookies = data.draw(st.lists(st.tuples(cookie_name_st, HEADER_VALUE), max_size=3))
    before = snapshot(demo)
    status, headers, raw = await send(
        demo,
        "/demo/login?" + urlencode({"next": nxt}),
        cookies=cookies,
        headers=data.draw(headers_st),
    )
    assert status == 200, raw[:300]
    text = raw.decode()
    shown = re.search(r'name="next" value="([^"]*)"', text)
    assert shown is not None and stays_on_site(shown.group(1).replace("&amp;", "&"))
    assert snapshot(demo) == before


@HOSTILE
@given(data=st.data())
async def test_demo_login_post_never_fails_and_never_leaves_the_site(
    demo: Quart, data: st.DataObject
) -> None:
    csrf = data.draw(st.text(TOKEN_CHARS, min_size=1, max_size=22))
    matching = data.draw(st.booleans())
    form = {
        "username": data.draw(st.sampled_from(["alice", "bob"]) | st.text(max_size=20)),
        "next": data.draw(HEADER_VALUE | st.sampled_from(["/", "//evil.example", "/\\x"])),
        "csrf": csrf if matching else data.draw(st.text(max_size=22)),
    }
    if data.draw(st.booleans()):
        body = Body("application/x-www-form-urlencoded", urlencode(form).encode())
    else:
        body = data.draw(body_st)
    cookies = [(CSRF_COOKIE, csrf)] if data.draw(st.booleans()) else []
    cookies += data.draw(st.lists(st.tuples(cookie_name_st, HEADER_VALUE), max_size=2))
    before = snapshot(demo)
    status, headers, raw = await send(
        demo,
        "/demo/login",
        method="POST",
        cookies=cookies,
        headers=data.draw(headers_st),
        body=body,
    )
    assert status < 500, (status, raw[:300])
    if status == 303:
        assert stays_on_site(headers["Location"]), headers["Location"]
    else:
        assert 400 <= status < 500
    assert snapshot(demo) == before


async def test_demo_login_with_a_non_ascii_form_token_is_400(demo: Quart) -> None:
    """Found by the property above: ``hmac.compare_digest`` raised on non-ASCII str (a 500)."""
    for cookie, sent in (("\u00e9", "\u00e9"), ("abc", "\u00e9"), ("\u00e9", "abc")):
        client = demo.test_client(use_cookies=False)
        response = await client.post(
            "/demo/login",
            headers={"Cookie": f"{CSRF_COOKIE}={cookie}"},
            form={"username": "alice", "next": "/", "csrf": sent},
        )
        assert response.status_code == 400


# --- single sign-on: the callback, logout and back-channel logout ---------------------------


@dataclass
class SSO:
    """An SSO bridge against a provider the test controls, with alice signed in and one
    login left half-way (its state and binding cookie live in the store)."""

    app: Quart
    op: ControlledProvider
    bridge_cookie: str
    csrf: str
    state: str
    binding_name: str
    binding: str


@pytest.fixture
async def sso(fake: Quart, clock: Clock) -> AsyncIterator[SSO]:
    op = ControlledProvider(clock=clock)
    limits = {"per_session": "off", "per_ip": "off"}
    application = make_sso_app(op, clock, fake, sections={"limits": limits})
    async with application.test_app():
        alice = application.test_client()
        assert (await sign_in(alice, op)).status_code == 303
        assert (await alice.get("/request_tokens")).status_code == 200
        session = await session_of(alice)
        half_way = application.test_client(use_cookies=False)
        started = await half_way.get("/login", query_string={"next": "/"})
        binding_name, binding = started.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)
        jar = {c.name: c.value for c in alice.cookie_jar}  # type: ignore[attr-defined, union-attr]
        yield SSO(
            app=application,
            op=op,
            bridge_cookie=jar[BRIDGE_COOKIE],
            csrf=session["logout"]["csrf_token"],
            state=query_of(started.headers["Location"])["state"],
            binding_name=binding_name,
            binding=binding,
        )


def oidc_records_of(app: Quart) -> list[dict[str, Any]]:
    return [
        v
        for v in (json.loads(raw) for raw, _ in snapshot(app).values() if isinstance(raw, bytes))
        if isinstance(v, dict) and v.get("method") == "oidc"
    ]


@HOSTILE
@given(data=st.data())
async def test_callback_with_forged_parameters_refuses_and_changes_nothing(
    sso: SSO, data: st.DataObject
) -> None:
    value_st = HEADER_VALUE | near_miss(sso.state) | st.just("")
    query = data.draw(
        st.dictionaries(
            st.sampled_from(["code", "state", "iss", "error", "error_description", "session_state"])
            | st.text(max_size=10),
            value_st | st.just(sso.op.issuer) | st.just("the-code"),
            max_size=5,
        )
    )
    cookies = data.draw(
        st.lists(
            st.tuples(st.just(sso.binding_name), near_miss(sso.binding) | HEADER_VALUE)
            | st.tuples(st.just(BRIDGE_COOKIE), near_miss(sso.bridge_cookie) | HEADER_VALUE),
            max_size=2,
        )
    )
    before, token_calls = snapshot(sso.app), len(sso.op.sent("/token"))
    status, headers, raw = await send(
        sso.app, "/callback?" + urlencode(query), cookies=cookies, headers=data.draw(headers_st)
    )
    assert 400 <= status < 500, (status, raw[:300])
    assert headers["Cache-Control"] == "no-store"
    assert len(sso.op.sent("/token")) == token_calls  # no code was ever redeemed
    assert snapshot(sso.app) == before


@HOSTILE
@given(data=st.data())
async def test_logout_without_the_sessions_token_changes_nothing(
    sso: SSO, data: st.DataObject
) -> None:
    """Forged cookies, or alice's own cookie with any CSRF token but hers: nobody is signed out,
    and the answer never sends the browser off the site."""
    with_cookie = data.draw(st.booleans())
    if with_cookie:
        cookies = [(BRIDGE_COOKIE, sso.bridge_cookie)]
        csrf = data.draw((HEADER_VALUE | near_miss(sso.csrf)).filter(lambda c: c != sso.csrf))
    else:
        cookies = data.draw(
            st.lists(st.tuples(st.just(BRIDGE_COOKIE), near_miss(sso.bridge_cookie)), max_size=2)
        )
        csrf = data.draw(HEADER_VALUE | st.just(sso.csrf))
    form = {"csrf_token": csrf, "next": data.draw(HEADER_VALUE | st.just("//evil.example"))}
    body = data.draw(
        st.just(Body("application/x-www-form-urlencoded", urlencode(form).encode())) | body_st
    )
    before = snapshot(sso.app)
    status, headers, raw = await send(
        sso.app,
        "/logout",
        method="POST",
        cookies=cookies,
        headers={"Origin": PUBLIC_URL, **data.draw(headers_st)},
        body=body,
    )
    assert status < 500, (status, raw[:300])
    if status == 303:
        assert stays_on_site(headers["Location"]), headers["Location"]
    else:
        assert_json_refusal(status, headers, raw)
    assert snapshot(sso.app) == before


def jwt_like(header: Any, claims: Any) -> str:
    def part(value: Any) -> str:
        return b64(json.dumps(value).encode())

    return f"{part(header)}.{part(claims)}.{b64(b'not-a-signature')}"


@HOSTILE
@given(data=st.data())
async def test_backchannel_logout_with_a_forged_token_ends_nobody(
    sso: SSO, data: st.DataObject
) -> None:
    """Anything not signed by the provider: garbage, ``alg: none``, a made-up signature, a key
    the provider never published. Alice's session lives on and nothing stored changes."""
    claims = sso.op.logout_claims(sid="sid-alice", sub="alice-sub")
    claims.update(data.draw(st.dictionaries(st.sampled_from(sorted(claims)), json_st, max_size=2)))
    token = data.draw(
        st.one_of(
            HEADER_VALUE,
            st.just(sso.op.unsigned(claims)),
            st.just(sso.op.unsigned(claims, typ="logout+jwt")),
            st.builds(jwt_like, json_st | st.just({"alg": "RS256", "kid": "k1"}), json_st),
            st.just(sso.op.sign(claims, key=ControlledProvider.new_key("k1"))),
        )
    )
    body = data.draw(
        st.just(
            Body("application/x-www-form-urlencoded", urlencode({"logout_token": token}).encode())
        )
        | body_st
    )
    before = snapshot(sso.app)
    status, headers, raw = await send(sso.app, "/backchannel-logout", method="POST", body=body)
    assert_json_refusal(status, headers, raw)
    assert snapshot(sso.app) == before
    assert oidc_records_of(sso.app)  # alice is still signed in


@HOSTILE
@given(data=st.data())
async def test_backchannel_logout_with_odd_signed_claims_never_fails(
    sso: SSO, data: st.DataObject
) -> None:
    """Signed by the provider, but with claims of any type: a clean 200 or 400, never a 5xx,
    and never alice's session (the token names someone else)."""
    claims = sso.op.logout_claims(sid="sid-of-someone-else", sub="someone-else")
    claims.update(data.draw(st.dictionaries(st.sampled_from(sorted(claims)), json_st, max_size=3)))
    if claims.get("sid") == "sid-alice" or claims.get("sub") == "alice-sub":
        return
    token = sso.op.sign(claims)
    status, headers, raw = await send(
        sso.app,
        "/backchannel-logout",
        method="POST",
        body=Body("application/x-www-form-urlencoded", urlencode({"logout_token": token}).encode()),
    )
    assert status in (200, 400), (status, raw[:300])
    assert headers["Content-Type"].startswith("application/json")
    assert oidc_records_of(sso.app)
