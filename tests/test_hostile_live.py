"""Hostile input over real sockets: the app ``sentifyd-bridge serve`` builds, served by the same
function ``serve`` runs (uvicorn with its bounded parser, and hypercorn), on the memory store and
on a real Redis, with generated requests at every endpoint that reads input.

The bridge holds one site-cookie session (with a handle chain), one SSO session and one login
left half-way, and every generated request lacks a valid credential (forged or near-miss
cookies, handles, CSRF tokens, logout tokens, bearer tokens) or carries odd methods, paths,
queries, headers and bodies. The properties, for every request:

- never a 5xx;
- every JSON answer of 4xx is ``{"error": <stable code>, ...}``; every HTML page carries the one
  Content-Security-Policy;
- nothing stored changes: every key's value and its expiry (the memory store's timer, Redis's
  ``PEXPIRETIME``) are the same after the request as before, while the bridge's clock is moved
  between requests, so a refused request that re-saves (and so keeps alive) a session shows.
  ``/login`` may add its own state record and nothing else.

``EXAMPLES`` requests per server and store, and ``PROCESS_EXAMPLES`` more per server to
``sentifyd-bridge serve`` itself, run as a process on Redis (its clock cannot be moved, but real
time moves, and Redis's absolute expiries show any write): 11,000 per run in all. Examples are
derandomized and the example database is off, so CI sends the same requests every time.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart import Quart
from test_hostile import (
    HEADER_VALUE,
    TOKEN_CHARS,
    Body,
    body_st,
    handle_st,
    headers_st,
    json_st,
    near_miss,
    raw_query_st,
)

from bridge.app import create_app
from bridge.doubles.fake_sentifyd import create_fake_sentifyd
from bridge.identity.site_cookie import SiteCookieSource
from bridge.settings.loader import load_settings
from bridge.wiring import Bridge
from support import leaks as support_leaks
from support.app import Clock
from support.config import (
    API_KEY,
    AVATAR_ID,
    PREMIUM_API_KEY,
    PREMIUM_ID,
    PUBLIC_URL,
    TEST_ENV,
    base_config,
)
from support.live import LiveServer
from support.oidc import OIDC_ENV, ControlledProvider, query_of
from support.redis import BridgeProcess, RedisServer

pytestmark = pytest.mark.integration

# Per server and store: 4 x 2500 = 10,000 generated requests a run (fewer while developing).
EXAMPLES = int(os.environ.get("HOSTILE_LIVE_EXAMPLES", "2500"))
PROCESS_EXAMPLES = int(os.environ.get("HOSTILE_PROCESS_EXAMPLES", "500"))
ADMIN_TOKEN = "admin-token-for-hostile-tests-0123456789"  # noqa: S105
METRICS_TOKEN = "metrics-token-for-hostile-tests-0123456789"  # noqa: S105
support_leaks.always(ADMIN_TOKEN)
support_leaks.always(METRICS_TOKEN)
BRIDGE_COOKIE = "sentifyd_bridge"
ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
# The default server (granian) on both stores with every example; the other two servers ``serve``
# offers with a quarter each (what they could add is their HTTP parsing, which
# tests/test_server_limits.py and the process rows below exercise).
COMBOS = [
    ("granian", "memory"),
    ("granian", "redis"),
    ("uvicorn", "memory"),
    ("hypercorn", "redis"),
]


SNAPSHOT_SCRIPT = """
local out = {}
for _, key in ipairs(redis.call('KEYS', '*')) do
  table.insert(out, key)
  table.insert(out, redis.call('DUMP', key))
  table.insert(out, redis.call('PEXPIRETIME', key))
end
return out
"""


@dataclass
class Stack:
    """A live bridge with sessions in its store, and what the visitors hold."""

    server: LiveServer
    app: Quart
    clock: Clock
    op: ControlledProvider
    redis: RedisServer | None
    base: float
    http: httpx.Client
    site: str  # alice's site cookie
    alice: str  # alice's bridge cookie (a site-cookie session)
    handle: str  # alice's handle
    bob: str  # bob's bridge cookie (an SSO session)
    csrf: str  # bob's CSRF token
    binding_name: str
    binding: str  # a login left half-way
    state: str
    sent: int = 0
    examples: int = EXAMPLES  # how many hostile requests the properties send to it
    _client: Any = None

    def _redis_client(self) -> Any:
        if self._client is None:
            assert self.redis is not None
            self._client = self.redis.client()
        return self._client

    def snapshot(self) -> dict[str, Any]:
        """Every stored key's value and expiry."""
        if self.redis is not None:
            # One round trip: every key with its serialized value and its absolute expiry.
            flat = self._redis_client().eval(SNAPSHOT_SCRIPT, 0)
            return {flat[i].decode(): flat[i + 1 : i + 3] for i in range(0, len(flat), 3)}
        store: Any = Bridge.of(self.app).store
        return store.entries()  # type: ignore[no-any-return]


def _sign_in_site(http: httpx.Client, site: str) -> tuple[str, str]:
    response = http.get("/request_tokens", headers={"Cookie": f"session={site}"})
    assert response.status_code == 200, response.text
    http.cookies.clear()
    return response.cookies[BRIDGE_COOKIE], response.json()["tokens"]["refreshToken"]


def _start_login(http: httpx.Client) -> tuple[str, str, str, dict[str, str]]:
    started = http.get("/login", params={"next": "/"})
    assert started.status_code == 302, started.text
    http.cookies.clear()
    name, value = started.headers["set-cookie"].split(";", 1)[0].split("=", 1)
    params = query_of(started.headers["location"])
    return name, value, params["state"], params


@pytest.fixture(scope="module", params=COMBOS, ids=["-".join(c) for c in COMBOS])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    server_name, store_name = request.param
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start() if store_name == "redis" else None
    clock = Clock(start=time.time())
    op = ControlledProvider(clock=clock)
    fake = create_fake_sentifyd({API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID}, token_ttl=3600)
    data = base_config()
    data["login"]["oidc"] = {
        "issuer": op.issuer,
        "client_id": op.client_id,
        "client_secret_env": "OIDC_CLIENT_SECRET",
    }
    data["limits"] = {"per_session": "off", "per_ip": "off", "login_per_ip": "off"}
    data["session"]["idle_timeout"] = 7200
    if redis is not None:
        data["store"] = {"url": redis.url}
    env = {
        **TEST_ENV,
        **OIDC_ENV,
        "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "BRIDGE_METRICS_TOKEN": METRICS_TOKEN,
    }
    settings_ = load_settings(None, env, overrides=data)
    app = create_app(
        settings_,
        sentifyd_transport=httpx.ASGITransport(app=fake),
        oidc_transport=op.transport(),
        clock=clock,
    )
    server = LiveServer(app, server=server_name).start()
    http = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)
    built: Stack | None = None
    try:
        assert settings_.site_cookie is not None
        site = str(  # signed on the bridge's clock, which the properties move
            SiteCookieSource(settings_.site_cookie, clock=clock).serializer.dumps(
                {"user_id": "alice", "groups": ["customers"]}
            )
        )
        alice, handle = _sign_in_site(http, site)
        name, binding, _, params = _start_login(http)
        claims = op.claims(params["nonce"], sub="bob-sub", sid="sid-bob")
        op.token_response = op.tokens(op.sign(claims), expires_in=86400, refresh_token=None)
        done = http.get(
            "/callback",
            params={"code": "c", "state": params["state"], "iss": op.issuer},
            headers={"Cookie": f"{name}={binding}"},
        )
        assert done.status_code == 303, done.text
        bob = done.cookies[BRIDGE_COOKIE]
        http.cookies.clear()
        csrf = http.get("/session", headers={"Cookie": f"{BRIDGE_COOKIE}={bob}"}).json()
        http.cookies.clear()
        name, binding, state, _ = _start_login(http)  # this one is left half-way
        built = Stack(
            server=server,
            app=app,
            clock=clock,
            op=op,
            redis=redis,
            base=clock.now,
            http=http,
            site=site,
            alice=alice,
            handle=handle,
            bob=bob,
            csrf=csrf["logout"]["csrf_token"],
            binding_name=name,
            binding=binding,
            state=state,
            examples=EXAMPLES if server_name == "granian" else EXAMPLES // 4,
        )
        yield built
    finally:
        http.close()
        server.stop()
        if built is not None and built._client is not None:
            built._client.close()
        if redis is not None:
            redis.stop()


# --- generated requests -------------------------------------------------------------------------


@dataclass
class Req:
    method: str
    path: str
    cookies: list[tuple[str, str]]
    headers: dict[str, str]
    body: Body | None = None
    starts_login: bool = False


def cookies_without_credentials(stack: Stack) -> st.SearchStrategy[list[tuple[str, str]]]:
    forged_bridge = st.text(TOKEN_CHARS, min_size=43, max_size=43) | near_miss(stack.alice)
    return st.lists(
        st.tuples(st.just("session"), HEADER_VALUE | near_miss(stack.site) | st.just(stack.handle))
        | st.tuples(st.sampled_from([BRIDGE_COOKIE, f"__Host-{BRIDGE_COOKIE}"]), forged_bridge)
        | st.tuples(st.just(BRIDGE_COOKIE), near_miss(stack.bob))
        | st.tuples(st.just(stack.binding_name), near_miss(stack.binding) | HEADER_VALUE)
        | st.tuples(st.text(TOKEN_CHARS, min_size=1, max_size=12), HEADER_VALUE),
        max_size=4,
    )


def query(raw: str) -> str:
    return f"?{raw}" if raw else ""


@st.composite
def _requests(draw: st.DrawFn, stack: Stack, parts: dict[str, Any]) -> Req:
    forged = parts["forged"]
    kind = draw(
        st.sampled_from(
            [
                "tokens",
                "tokens",
                "bad_handle",
                "page",
                "session",
                "login",
                "callback",
                "logout",
                "backchannel",
                "admin",
                "metrics",
                "odd",
            ]
        )
    )
    headers = draw(headers_st)
    if kind == "tokens":
        method = draw(st.sampled_from(["GET", "POST"]))
        avatar = draw(st.sampled_from(["", "/premium", "/ghost"]))
        raw = draw(raw_query_st | st.just(""))
        body = draw(body_st) if method == "POST" else None
        return Req(method, f"/request_tokens{avatar}{query(raw)}", draw(forged), headers, body)
    if kind == "bad_handle":
        handle = draw(parts["bad_handle"])
        cookies = [("session", stack.site), (BRIDGE_COOKIE, stack.alice)]
        avatar = draw(st.sampled_from(["", "/premium"]))
        if draw(st.booleans()):
            body = Body("application/json", json.dumps({"refreshToken": handle}).encode())
            return Req("POST", f"/request_tokens{avatar}", cookies, headers, body)
        path = f"/request_tokens{avatar}?" + urlencode({"refreshToken": handle})
        return Req("GET", path, cookies, headers)
    if kind == "page":
        page = draw(
            st.sampled_from(["/", "/avatars/default", "/avatars/premium", "/avatars/ghost"])
        )
        raw = draw(raw_query_st | st.just(""))
        return Req("GET", page + query(raw), draw(forged), headers)
    if kind == "session":
        return Req(
            "GET", "/session" + query(draw(raw_query_st | st.just(""))), draw(forged), headers
        )
    if kind == "login":
        params = draw(
            st.dictionaries(
                st.sampled_from(["next", "provider", "prompt"]) | st.text(max_size=8),
                HEADER_VALUE | st.sampled_from(["//evil.example", "/\\evil", "default", "nope"]),
                max_size=3,
            )
        )
        return Req("GET", "/login?" + urlencode(params), draw(forged), headers, starts_login=True)
    if kind == "callback":
        params = draw(
            st.dictionaries(
                st.sampled_from(["code", "state", "iss", "error", "session_state"]),
                HEADER_VALUE | near_miss(stack.state) | st.just(stack.op.issuer),
                max_size=4,
            )
        )
        return Req("GET", "/callback?" + urlencode(params), draw(forged), headers)
    if kind == "logout":
        if draw(st.booleans()):
            cookies = [(BRIDGE_COOKIE, draw(st.sampled_from([stack.bob, stack.alice])))]
            csrf = draw(parts["bad_csrf"])
        else:
            cookies = draw(forged)
            csrf = draw(HEADER_VALUE | st.just(stack.csrf))
        form = {"csrf_token": csrf, "next": draw(HEADER_VALUE | st.just("//evil.example"))}
        body = draw(
            st.just(Body("application/x-www-form-urlencoded", urlencode(form).encode())) | body_st
        )
        return Req("POST", "/logout", cookies, {"Origin": PUBLIC_URL, **headers}, body)
    if kind == "backchannel":
        claims = stack.op.logout_claims(sid="sid-bob", sub="bob-sub")
        claims.update(draw(st.dictionaries(st.sampled_from(sorted(claims)), json_st, max_size=2)))
        token = draw(
            HEADER_VALUE
            | st.just(stack.op.unsigned(claims))
            | st.just(stack.op.sign(claims, key=parts["foreign_key"]))
            | st.integers(9_000, 60_000).map(lambda n: "eyJ9." + "W" * n + ".c2ln")
        )
        body = draw(
            st.just(
                Body(
                    "application/x-www-form-urlencoded",
                    urlencode({"logout_token": token}).encode(),
                )
            )
            | body_st
        )
        return Req("POST", "/backchannel-logout", draw(forged), headers, body)
    if kind in ("admin", "metrics"):
        token = ADMIN_TOKEN if kind == "admin" else METRICS_TOKEN
        auth = draw(
            st.just("")
            | HEADER_VALUE
            | near_miss(token).map(lambda t: "Bearer " + t)
            | st.just("Bearer " + METRICS_TOKEN if kind == "admin" else "Bearer " + ADMIN_TOKEN)
            | st.just("Basic " + token)
        )
        if kind == "metrics":
            return Req("GET", "/metrics", draw(forged), {**headers, "Authorization": auth})
        method, path = draw(
            st.sampled_from(
                [
                    ("GET", "/admin/users/alice"),
                    ("GET", "/admin/sessions?limit=5"),
                    ("DELETE", "/admin/users/alice/sessions"),
                    ("DELETE", "/admin/users/bob-sub/block"),
                    ("DELETE", "/admin/sessions/" + "a" * 32),
                ]
            )
        )
        return Req(method, path, draw(forged), {**headers, "Authorization": auth})
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "TRACE"]))
    path = draw(
        st.sampled_from(["/healthz", "/readyz", "/static/bridge.css", "/admin", "/x", "/avatars/"])
    )
    return Req(method, path + query(draw(raw_query_st | st.just(""))), draw(forged), headers)


def requests_st(stack: Stack) -> st.SearchStrategy[Req]:
    """Requests without a valid credential, at every endpoint (strategies built once)."""
    parts = {
        "forged": cookies_without_credentials(stack),
        "bad_handle": (handle_st | near_miss(stack.handle)).filter(
            lambda h: h not in ("", stack.handle)
        ),
        "bad_csrf": (HEADER_VALUE | near_miss(stack.csrf)).filter(lambda c: c != stack.csrf),
        "foreign_key": ControlledProvider.new_key("k1"),  # same kid, never published
    }
    return _requests(stack, parts)


def send(stack: Stack, req: Req) -> httpx.Response:
    headers = {k: v for k, v in req.headers.items() if k.lower() not in ("cookie", "connection")}
    # One connection per request: after a refusal that leaves a body unread the server closes
    # the connection, and a client reusing it would race that close (a client-side error).
    headers["Connection"] = "close"
    if req.cookies:
        headers["Cookie"] = "; ".join(f"{n}={v}" for n, v in req.cookies)
    content = None
    if req.body is not None:
        content = req.body.data
        if req.body.content_type is not None:
            headers["Content-Type"] = req.body.content_type
    # A header value's surrounding whitespace is not part of it (RFC 9110, 5.5): h11 refuses it.
    raw = [(k.encode("latin-1"), v.strip(" \t").encode("latin-1")) for k, v in headers.items()]
    try:
        response = stack.http.request(req.method, req.path, headers=raw, content=content)
    finally:
        stack.http.cookies.clear()  # nothing a response set travels with the next request
    stack.sent += 1
    return response


def check_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text and 'File "' not in response.text
    mimetype = response.headers.get("content-type", "").split(";")[0]
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert mimetype in ("application/json", "text/html"), mimetype
    if mimetype == "application/json" and response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and ERROR_CODE.match(str(body.get("error"))), body
    if mimetype == "text/html":
        policies = response.headers.get_list("content-security-policy")
        assert len(policies) == 1 and "frame-ancestors 'self'" in policies[0], policies


def check_unchanged(before: dict[str, Any], after: dict[str, Any], req: Req) -> None:
    if req.starts_login:
        added = set(after) - set(before)
        assert all(":oidc-state:" in key for key in added), sorted(added)
        after = {k: v for k, v in after.items() if k not in added}
    # A rate-limit window's counter expires in real time at the end of its window: one that
    # ended between the two snapshots (a slow machine) is gone by its deadline, not by the request.
    expired = {k for k in set(before) - set(after) if ":rate:" in k}
    before = {k: v for k, v in before.items() if k not in expired}
    assert after == before, req


HOSTILE_LIVE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def test_hostile_requests_on_a_live_bridge_change_nothing(stack: Stack) -> None:
    for value in (stack.site, stack.alice, stack.handle, stack.bob, stack.binding):
        support_leaks.credential(value)
    for value in ("op-access-token-value", "op-refresh-token-value"):
        support_leaks.secret(value)  # the provider's tokens, as ControlledProvider hands them out
    sent_before = stack.sent

    requests = requests_st(stack)

    @settings(HOSTILE_LIVE, max_examples=stack.examples)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        req = data.draw(requests)
        # The bridge's clock jumps to any time within ten minutes of the start, between
        # requests, so that a write-back would store a new expiry or a new last-seen time.
        stack.clock.now = stack.base + data.draw(st.floats(1, 600))
        before = stack.snapshot()
        response = send(stack, req)
        check_answer(response)
        check_unchanged(before, stack.snapshot(), req)

    run()
    assert stack.sent - sent_before >= stack.examples


# --- sentifyd-bridge serve, as a process ----------------------------------------------------------

PROCESS_CONFIG = """
[server]
host = "127.0.0.1"
public_url = "http://127.0.0.1:8000"
asgi_server = "{server}"

[session]
cookie_secure = false
idle_timeout = 7200

[store]
url = "{store_url}"

[sentifyd]
backend = "{backend}"
retry_backoff = 0.01

[[avatars]]
name = "default"
avatar_id = "{avatar_id}"
api_key_env = "AVATAR_API_KEY"

[[avatars]]
name = "premium"
avatar_id = "{premium_id}"
api_key_env = "PREMIUM_AVATAR_API_KEY"
allow = {{ groups = ["customers"] }}

[login.cookie]
name = "session"
format = "flask"
secret_key_env = "SITE_SECRET_KEY"
max_age = 3600
user_field = "user_id"
claim_fields = ["groups"]
login_url = "https://shop.example.com/login?next={{next}}"

[limits]
per_session = "off"
per_ip = "off"
login_per_ip = "off"

[logging]
level = "INFO"
"""


@pytest.fixture(scope="module", params=["granian", "uvicorn", "hypercorn"])
def process_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """``sentifyd-bridge serve`` on Redis against a live stand-in Sentifyd; no SSO here (the
    provider the tests control lives in-process), so its routes answer 404."""
    directory = tmp_path_factory.mktemp("serve")
    redis = RedisServer(directory).start()
    fake = LiveServer(
        create_fake_sentifyd({API_KEY: AVATAR_ID, PREMIUM_API_KEY: PREMIUM_ID}, token_ttl=3600),
        server="hypercorn",
    ).start()
    config = directory / "bridge.toml"
    config.write_text(
        PROCESS_CONFIG.format(
            server=request.param,
            store_url=redis.url,
            backend=fake.url,
            avatar_id=AVATAR_ID,
            premium_id=PREMIUM_ID,
        )
    )
    env = {"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN, "BRIDGE_METRICS_TOKEN": METRICS_TOKEN}
    bridge = BridgeProcess(directory, f"serve-{request.param}", config_path=config, env=env)
    bridge.spawn()
    http = httpx.Client(base_url=bridge.url, timeout=30, follow_redirects=False)
    built: Stack | None = None
    try:
        bridge.wait_ready()
        site_settings = load_settings(None, TEST_ENV, overrides=base_config()).site_cookie
        assert site_settings is not None
        site = str(
            SiteCookieSource(site_settings).serializer.dumps(
                {"user_id": "alice", "groups": ["customers"]}
            )
        )
        alice, handle = _sign_in_site(http, site)
        clock = Clock()  # the process keeps its own time; nothing reads this one
        built = Stack(
            server=fake,
            app=fake.app,
            clock=clock,
            op=ControlledProvider(clock=clock),
            redis=redis,
            base=clock.now,
            http=http,
            site=site,
            alice=alice,
            handle=handle,
            bob="no-such-session-" + "b" * 27,
            csrf="no-such-csrf-token",
            binding_name="sentifyd_bridge_login",
            binding="no-such-binding-" + "c" * 27,
            state="no-such-state-" + "d" * 29,
        )
        yield built
    finally:
        http.close()
        bridge.stop()
        fake.stop()
        if built is not None and built._client is not None:
            built._client.close()
        redis.stop()


def test_hostile_requests_to_serve_processes_change_nothing(process_stack: Stack) -> None:
    stack = process_stack
    for value in (stack.site, stack.alice, stack.handle):
        support_leaks.credential(value)
    requests = requests_st(stack)
    sent_before = stack.sent

    @settings(HOSTILE_LIVE, max_examples=PROCESS_EXAMPLES)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        req = data.draw(requests)
        before = stack.snapshot()
        response = send(stack, req)
        check_answer(response)
        check_unchanged(before, stack.snapshot(), req)

    run()
    assert stack.sent - sent_before >= PROCESS_EXAMPLES
