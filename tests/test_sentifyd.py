"""The upstream client: response shapes, expiry, retries and error mapping."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from bridge.errors import UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from bridge.upstream.sentifyd import SentifydClient, jwt_exp, parse_tokens
from support.config import API_KEY, make_settings

NOW = 1_800_000_000.0


def jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    "body",
    [
        {
            "data": {
                "access_token": "A",
                "refresh_token": "R",
                "avatar_params": {"v": 1},
                "expires_in": 120,
            }
        },
        {"access_token": "A", "refresh_token": "R", "avatar_params": {"v": 1}, "expires_in": 120},
        {
            "data": {
                "accessToken": "A",
                "refreshToken": "R",
                "avatarParameters": {"v": 1},
                "expiresIn": 120,
            }
        },
        {"accessToken": "A", "refreshToken": "R", "avatarParams": {"v": 1}, "expiresIn": "120"},
    ],
)
def test_every_documented_shape_parses(body: dict[str, Any]) -> None:
    tokens = parse_tokens(body, now=NOW, default_expires_in=55)
    assert (tokens.access_token, tokens.refresh_token, tokens.avatar_params) == ("A", "R", {"v": 1})
    assert tokens.expires_at == NOW + 120 and tokens.token_type == "Bearer"


def test_expiry_falls_back_to_jwt_exp_then_default() -> None:
    token = jwt({"exp": NOW + 300})
    assert (
        parse_tokens({"access_token": token}, now=NOW, default_expires_in=55).expires_at
        == NOW + 300
    )
    assert (
        parse_tokens({"access_token": "opaque"}, now=NOW, default_expires_in=55).expires_at
        == NOW + 55
    )
    expired = jwt({"exp": NOW - 10})
    assert (
        parse_tokens({"access_token": expired}, now=NOW, default_expires_in=55).expires_at
        == NOW + 55
    )


@pytest.mark.parametrize(
    "token", ["a.b", "a.!!!.c", jwt({"exp": "soon"}), jwt({"exp": True}), "x.W10.y"]
)
def test_unreadable_jwt_has_no_exp(token: str) -> None:
    assert jwt_exp(token) is None


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        {"data": {}},
        {"access_token": ""},
        {"access_token": 5},
        {"access_token": "A", "avatar_params": "x"},
        {"access_token": "A", "refresh_token": 7},
    ],
)
def test_unusable_bodies_are_upstream_unavailable(body: Any) -> None:
    with pytest.raises(UpstreamUnavailable):
        parse_tokens(body, now=NOW, default_expires_in=55)


def client_with(handler: Any, **overrides: Any) -> SentifydClient:
    settings = make_settings({"sentifyd": overrides} if overrides else None)
    http = SentifydClient.build_http(settings.sentifyd, httpx.MockTransport(handler))
    return SentifydClient(settings.sentifyd, http, clock=lambda: NOW)


OK = {"data": {"access_token": "A", "refresh_token": "R", "avatar_params": {}, "expires_in": 60}}


async def test_5xx_is_retried_then_succeeds() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503) if len(calls) < 3 else httpx.Response(200, json=OK)

    upstream = client_with(handler)
    tokens = await upstream.login(make_settings().avatars[0])
    assert tokens.access_token == "A" and len(calls) == 3


async def test_retries_are_bounded() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamUnavailable):
        await client_with(handler, retries=2).login(make_settings().avatars[0])
    assert len(calls) == 3


async def test_4xx_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(401, json={"error": "bad key", "key": API_KEY})

    with pytest.raises(UpstreamRejected) as info:
        await client_with(handler).login(make_settings().avatars[0])
    assert info.value.upstream_status == 401 and len(calls) == 1
    assert API_KEY not in json.dumps(info.value.body()) and API_KEY not in str(info.value)


async def test_timeout_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(UpstreamTimeout):
        await client_with(handler).login(make_settings().avatars[0])
    assert len(calls) == 1


async def test_oversized_answer_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"{" + b" " * 2_000_000 + b"}")

    with pytest.raises(UpstreamUnavailable):
        await client_with(handler).login(make_settings().avatars[0])


async def test_observer_sees_each_call_outcome() -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=OK)

    upstream = client_with(handler)
    upstream.observer = lambda call, outcome, seconds: seen.append((call, outcome))
    await upstream.login(make_settings().avatars[0])
    assert seen == [("login", "ok")]


def test_tokens_repr_hides_tokens() -> None:
    tokens = parse_tokens(OK, now=NOW, default_expires_in=55)
    assert "A" not in repr(tokens).replace("UpstreamTokens", "").replace("Bearer", "")
