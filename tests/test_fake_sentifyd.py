"""The stand-in Sentifyd: both login forms, shapes, tokens, refresh, failure modes, control,
and one run under real hypercorn (including what "reset" looks like on the wire)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from quart import Quart
from quart.typing import TestClientProtocol as Client

import bridge.doubles.fake_sentifyd as fake_module
from bridge.doubles.fake_sentifyd import (
    DEFAULT_AVATAR,
    SHAPES,
    ConnectionAborted,
    FakeState,
    create_fake_sentifyd,
    key_fingerprint,
    serve_fake_sentifyd,
)
from bridge.errors import UpstreamRejected, UpstreamUnavailable
from bridge.secret import Secret
from bridge.settings.schema import AvatarSettings, SentifydSettings
from bridge.upstream.sentifyd import SentifydClient, jwt_exp, parse_tokens
from support.config import API_KEY, AVATAR_ID
from support.live import free_port

LOGIN = "/api/login"
PLUGIN_LOGIN = "/api/v1/chatbot/login"
REFRESH = "/api/v1/chatbot/refresh"
GOOD = {"avatar_api_key": API_KEY}


@pytest.fixture
def fake_app() -> Quart:
    return create_fake_sentifyd({API_KEY: AVATAR_ID}, token_ttl=60)


@pytest.fixture
def state(fake_app: Quart) -> FakeState:
    return fake_app.extensions["fake_sentifyd"]


@pytest.fixture
def client(fake_app: Quart) -> Client:
    return fake_app.test_client()


def claims(token: str, state: FakeState) -> dict[str, Any]:
    return dict(jwt.decode(token, state.signing_key).claims)


def tokens_of(body: dict[str, Any]) -> dict[str, Any]:
    return body.get("data", body)


async def login_ok(client: Client, path: str = LOGIN, **extra: str) -> dict[str, Any]:
    response = await client.post(path, json={**GOOD, **extra})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    return tokens_of(await response.get_json())


# --- login -----------------------------------------------------------------------------------


async def test_documented_login_issues_a_signed_jwt(client: Client, state: FakeState) -> None:
    data = await login_ok(client)
    assert set(data) == {
        "access_token",
        "refresh_token",
        "avatar_params",
        "token_type",
        "expires_in",
    }
    assert data["token_type"] == "Bearer" and data["expires_in"] == 60
    assert data["avatar_params"]["name"] == "Ava"
    token = claims(data["access_token"], state)
    assert token["sub"] == AVATAR_ID and token["iss"] == "fake-sentifyd" and token["jti"]
    assert token["exp"] == token["iat"] + 60 and abs(token["iat"] - time.time()) < 5
    assert state.issued_access_tokens == [data["access_token"]]
    assert state.issued_refresh_tokens == [data["refresh_token"]]
    assert state.login_calls == 1 and state.calls_by_key == {key_fingerprint(API_KEY): 1}


async def test_plugin_login_checks_the_avatar_id(client: Client, state: FakeState) -> None:
    data = await login_ok(client, PLUGIN_LOGIN, avatar_id=AVATAR_ID)
    assert claims(data["access_token"], state)["sub"] == AVATAR_ID
    response = await client.post(PLUGIN_LOGIN, json={**GOOD, "avatar_id": "someone-else"})
    assert response.status_code == 403 and await response.get_json() == {"error": "avatar_mismatch"}
    assert len(state.issued_access_tokens) == 1 and state.login_calls == 2


async def test_plain_key_list_accepts_any_avatar_id() -> None:
    app = create_fake_sentifyd([API_KEY])
    client, state = app.test_client(), app.extensions["fake_sentifyd"]
    data = await login_ok(client, PLUGIN_LOGIN, avatar_id="anything")
    assert claims(data["access_token"], state)["sub"] == "anything"
    data = await login_ok(client)
    assert claims(data["access_token"], state)["sub"] == DEFAULT_AVATAR


@pytest.mark.parametrize("path", [LOGIN, PLUGIN_LOGIN])
@pytest.mark.parametrize("body", [{"avatar_api_key": "wrong-key"}, {"avatar_api_key": ""}, {}])
async def test_wrong_or_missing_key_is_401(
    client: Client, state: FakeState, path: str, body: dict[str, Any]
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 401
    assert await response.get_json() == {"error": "invalid_api_key"}
    assert state.issued_access_tokens == [] and state.login_calls == 1


@pytest.mark.parametrize(
    ("path", "data"),
    [
        (LOGIN, b"not json"),
        (LOGIN, b"[1, 2]"),
        (LOGIN, json.dumps({"avatar_api_key": 12}).encode()),
        (PLUGIN_LOGIN, json.dumps({**GOOD, "avatar_id": ["x"]}).encode()),
        (REFRESH, b"{"),
        (REFRESH, json.dumps({"refresh_token": 5}).encode()),
    ],
)
async def test_malformed_body_is_400_json(client: Client, path: str, data: bytes) -> None:
    response = await client.post(path, data=data, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and await response.get_json() == {"error": "bad_request"}


async def test_unknown_paths_and_methods_answer_json(client: Client) -> None:
    response = await client.get(LOGIN)
    assert response.status_code == 405
    assert await response.get_json() == {"error": "method_not_allowed"}
    assert (await client.get("/nothing")).status_code == 404


# --- shapes and tokens -----------------------------------------------------------------------

EXPECTED_KEYS = {
    "wrapped_snake": {"access_token", "refresh_token", "avatar_params", "token_type", "expires_in"},
    "flat_snake": {"access_token", "refresh_token", "avatar_params", "token_type", "expires_in"},
    "wrapped_camel": {"accessToken", "refreshToken", "avatarParameters", "tokenType", "expiresIn"},
    "flat_camel": {"accessToken", "refreshToken", "avatarParams", "tokenType", "expiresIn"},
    "no_expiry": {"access_token", "refresh_token", "avatar_params", "token_type"},
}


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_shape_is_what_parse_tokens_reads(shape: str) -> None:
    app = create_fake_sentifyd({API_KEY: AVATAR_ID}, shape=shape, token_ttl=300)
    state: FakeState = app.extensions["fake_sentifyd"]
    response = await app.test_client().post(LOGIN, json=GOOD)
    body = await response.get_json()
    assert ("data" in body) == shape.startswith(("wrapped", "no_expiry"))
    assert set(tokens_of(body)) == EXPECTED_KEYS[shape]

    now = time.time()
    tokens = parse_tokens(body, now=now, default_expires_in=55)
    assert tokens.access_token == state.issued_access_tokens[0]
    assert tokens.refresh_token == state.issued_refresh_tokens[0]
    assert tokens.token_type == "Bearer" and tokens.avatar_params["voice"] == "en-US-1"
    # expires_in, or for no_expiry the JWT's exp: either way about 300 s, not the 55 s default
    assert abs(tokens.expires_at - (now + 300)) < 3


async def test_jwt_exp_follows_token_ttl_and_reads_without_the_key() -> None:
    app = create_fake_sentifyd([API_KEY], token_ttl=123)
    data = await login_ok(app.test_client())
    token = claims(data["access_token"], app.extensions["fake_sentifyd"])
    assert token["exp"] - token["iat"] == 123
    assert jwt_exp(data["access_token"]) == token["exp"]  # the bridge's unverified reading


# --- refresh ---------------------------------------------------------------------------------


async def test_refresh_tokens_are_single_use(client: Client, state: FakeState) -> None:
    first = await login_ok(client)
    response = await client.post(
        REFRESH, json={"refresh_token": first["refresh_token"], "avatar_id": AVATAR_ID}
    )
    assert response.status_code == 200
    second = tokens_of(await response.get_json())
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert claims(second["access_token"], state)["sub"] == AVATAR_ID

    again = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert again.status_code == 401
    assert await again.get_json() == {"error": "invalid_refresh_token"}
    unknown = await client.post(REFRESH, json={"refresh_token": "never-issued"})
    assert unknown.status_code == 401
    newest = await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
    assert newest.status_code == 200
    assert state.refresh_calls == 4 and state.login_calls == 1
    assert len(state.issued_refresh_tokens) == 3


async def test_refresh_can_be_switched_off() -> None:
    app = create_fake_sentifyd([API_KEY], refresh_enabled=False)
    client = app.test_client()
    data = await login_ok(client)
    response = await client.post(REFRESH, json={"refresh_token": data["refresh_token"]})
    assert response.status_code == 404 and await response.get_json() == {"error": "not_found"}


# --- failure modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 429, 500, 503])
async def test_status_failure(client: Client, state: FakeState, status: int) -> None:
    state.fail = f"status:{status}"
    response = await client.post(LOGIN, json=GOOD)
    assert response.status_code == status
    assert await response.get_json() == {"error": "fake_failure", "status": status}
    assert state.issued_access_tokens == [] and state.login_calls == 1


async def test_non_json_failure(client: Client, state: FakeState) -> None:
    state.fail = "non_json"
    response = await client.post(LOGIN, json=GOOD)
    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    with pytest.raises(ValueError):
        json.loads(await response.get_data())


async def test_missing_fields_failure(client: Client, state: FakeState) -> None:
    state.fail = "missing_fields"
    response = await client.post(LOGIN, json=GOOD)
    body = await response.get_json()
    assert response.status_code == 200 and "access_token" not in body["data"]
    with pytest.raises(UpstreamUnavailable):
        parse_tokens(body, now=time.time(), default_expires_in=55)


async def test_huge_failure_is_a_valid_answer_of_ten_megabytes(
    client: Client, state: FakeState
) -> None:
    state.fail = "huge"
    response = await client.post(LOGIN, json=GOOD)
    raw = await response.get_data()
    assert response.status_code == 200 and len(raw) > 10 * 1024 * 1024
    body = json.loads(raw)
    assert tokens_of(body)["access_token"] == state.issued_access_tokens[0]


async def test_hang_failure_waits_then_gives_up(
    client: Client, state: FakeState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_module, "HANG_SECONDS", 0.05)  # the real hang is 3600 s
    state.fail = "hang"
    started = time.perf_counter()
    response = await client.post(LOGIN, json=GOOD)
    assert time.perf_counter() - started >= 0.05 and response.status_code == 504


async def test_reset_failure_raises_inside_the_app(client: Client, state: FakeState) -> None:
    # In-process there is no socket to drop; the app raises mid-body (see the live test).
    state.fail = "reset"
    with pytest.raises(ConnectionAborted):
        await client.post(LOGIN, json=GOOD)


async def test_fail_count_counts_down_then_clears(client: Client, state: FakeState) -> None:
    state.fail, state.fail_count = "status:503", 2
    statuses = [(await client.post(LOGIN, json=GOOD)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert state.fail is None and state.fail_count is None and state.login_calls == 3


async def test_failure_without_count_lasts_until_cleared(client: Client, state: FakeState) -> None:
    state.fail = "status:502"
    statuses = [(await client.post(LOGIN, json=GOOD)).status_code for _ in range(3)]
    assert statuses == [502, 502, 502]
    state.fail = None
    assert (await client.post(LOGIN, json=GOOD)).status_code == 200


async def test_failures_apply_to_refresh_too(client: Client, state: FakeState) -> None:
    data = await login_ok(client)
    state.fail, state.fail_count = "status:500", 1
    response = await client.post(REFRESH, json={"refresh_token": data["refresh_token"]})
    assert response.status_code == 500
    response = await client.post(REFRESH, json={"refresh_token": data["refresh_token"]})
    assert response.status_code == 200  # the failed call did not use the token up


async def test_latency_delays_the_answer(client: Client, state: FakeState) -> None:
    state.latency = 0.1
    started = time.perf_counter()
    assert (await client.post(LOGIN, json=GOOD)).status_code == 200
    assert time.perf_counter() - started >= 0.1


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("status:503", UpstreamUnavailable),
        ("status:401", UpstreamRejected),
        ("non_json", UpstreamUnavailable),
        ("missing_fields", UpstreamUnavailable),
        ("huge", UpstreamUnavailable),
    ],
)
async def test_the_bridge_client_turns_each_failure_into_its_error(
    fake_app: Quart, state: FakeState, mode: str, error: type[Exception]
) -> None:
    sentifyd = SentifydSettings(backend="http://fake", retries=0)
    avatar = AvatarSettings(
        name="main", avatar_id=AVATAR_ID, api_key_env="K", api_key=Secret(API_KEY)
    )
    transport = httpx.ASGITransport(app=fake_app)
    async with SentifydClient.build_http(sentifyd, transport) as http:
        state.fail = mode
        with pytest.raises(error):
            await SentifydClient(sentifyd, http).login(avatar)


# --- state and control -----------------------------------------------------------------------


async def test_reset_forgets_calls_tokens_and_failures(client: Client, state: FakeState) -> None:
    await login_ok(client)
    state.fail, state.fail_count, state.latency, state.token_ttl = "huge", 3, 0.5, 5
    state.reset()
    assert (state.login_calls, state.refresh_calls, state.calls_by_key) == (0, 0, {})
    assert state.issued_access_tokens == [] == state.issued_refresh_tokens
    assert (state.fail, state.fail_count, state.latency, state.token_ttl) == (None, None, 0.0, 60)
    assert (await client.post(LOGIN, json=GOOD)).status_code == 200


async def test_control_endpoint_sets_and_stats_report(client: Client, state: FakeState) -> None:
    await login_ok(client)
    await client.post(LOGIN, json={"avatar_api_key": "other"})
    response = await client.post(
        "/_fake/control",
        json={
            "fail": "status:502",
            "fail_count": 1,
            "latency": 0,
            "token_ttl": 30,
            "shape": "flat_camel",
        },
    )
    assert response.status_code == 200
    assert (state.fail, state.fail_count, state.token_ttl, state.shape) == (
        "status:502",
        1,
        30,
        "flat_camel",
    )
    assert (await client.post(LOGIN, json=GOOD)).status_code == 502
    assert (await login_ok(client))["expiresIn"] == 30

    stats = await (await client.get("/_fake/stats")).get_json()
    assert stats["login_calls"] == 4 and stats["access_tokens_issued"] == 2
    assert stats["calls_by_key"] == {key_fingerprint(API_KEY): 3, key_fingerprint("other"): 1}
    assert stats["fail"] is None and stats["shape"] == "flat_camel"
    text = json.dumps(stats)
    assert not any(t in text for t in state.issued_access_tokens + state.issued_refresh_tokens)

    response = await client.post("/_fake/control", json={"reset": True, "fail": "non_json"})
    stats = await response.get_json()
    assert stats["login_calls"] == 0 and stats["shape"] == "wrapped_snake"
    assert (stats["fail"], stats["fail_count"]) == ("non_json", None)


@pytest.mark.parametrize(
    "body",
    [
        {"fail": "status:99"},
        {"fail": "explode"},
        {"fail_count": 0},
        {"fail_count": True},
        {"token_ttl": 0},
        {"token_ttl": 1.5},
        {"shape": "xml"},
        {"latency": -1},
        {"latency": "1"},
        {"reset": 1},
        {"secret": 1},
        ["reset"],
    ],
)
async def test_control_rejects_bad_settings_and_changes_nothing(
    client: Client, state: FakeState, body: Any
) -> None:
    response = await client.post("/_fake/control", json=body)
    assert response.status_code == 400
    assert (state.fail, state.fail_count, state.token_ttl, state.shape, state.latency) == (
        None,
        None,
        60,
        "wrapped_snake",
        0.0,
    )


async def test_control_endpoints_can_be_switched_off() -> None:
    client = create_fake_sentifyd([API_KEY], control=False).test_client()
    assert (await client.get("/_fake/stats")).status_code == 404
    assert (await client.post("/_fake/control", json={"fail": "hang"})).status_code == 404


async def test_the_api_key_never_shows(client: Client, state: FakeState) -> None:
    bodies = [
        await (await client.post(path, json={**GOOD, "avatar_id": avatar})).get_data()
        for path in (LOGIN, PLUGIN_LOGIN)
        for avatar in (AVATAR_ID, "bad")
    ]
    bodies.append(await (await client.get("/_fake/stats")).get_data())
    state.fail = "status:503"
    bodies.append(await (await client.post(LOGIN, json=GOOD)).get_data())
    for text in [*(b.decode() for b in bodies), repr(state), str(state.stats())]:
        assert API_KEY not in text
    assert not any(t in repr(state) for t in state.issued_refresh_tokens)


async def test_only_the_latest_tokens_are_remembered(
    client: Client, state: FakeState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_module, "MAX_REMEMBERED", 3)
    first = await login_ok(client)
    for _ in range(4):
        await login_ok(client)
    assert len(state.issued_access_tokens) == len(state.issued_refresh_tokens) == 3
    assert len(state.live_refresh_tokens) == 3
    response = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 401


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        create_fake_sentifyd(API_KEY)
    with pytest.raises(ValueError):
        create_fake_sentifyd([])
    with pytest.raises(ValueError):
        create_fake_sentifyd({API_KEY: ""})
    with pytest.raises(ValueError):
        create_fake_sentifyd([API_KEY], shape="xml")


# --- under real hypercorn --------------------------------------------------------------------


@pytest.mark.integration
async def test_under_real_hypercorn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port, stop = free_port(), asyncio.Event()
    server = asyncio.create_task(
        serve_fake_sentifyd(
            "127.0.0.1", port, {API_KEY: AVATAR_ID}, shutdown_trigger=stop.wait, token_ttl=90
        )
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            for _ in range(200):  # wait for the socket
                try:
                    await http.get("/_fake/stats")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.025)

            # The bridge's own client logs in and refreshes against it.
            sentifyd = SentifydSettings(backend=url, refresh_path=REFRESH, retries=0)
            avatar = AvatarSettings(
                name="main", avatar_id=AVATAR_ID, api_key_env="K", api_key=Secret(API_KEY)
            )
            upstream = SentifydClient(sentifyd, http)
            tokens = await upstream.login(avatar)
            assert tokens.refresh_token and 85 < tokens.expires_at - time.time() <= 90
            assert (await upstream.refresh(avatar, tokens.refresh_token)).refresh_token

            # "reset": status and headers arrive, then the socket closes mid-body.
            await http.post("/_fake/control", json={"fail": "reset", "fail_count": 1})
            async with http.stream("POST", LOGIN, json=GOOD) as response:
                assert response.status_code == 200
                with pytest.raises(httpx.RemoteProtocolError):
                    await response.aread()
            await http.post("/_fake/control", json={"fail": "reset", "fail_count": 1})
            with pytest.raises(UpstreamUnavailable):  # the client sees a transport error
                await upstream.login(avatar)

            # "hang": the client times out; the server cancels the handler and carries on.
            await http.post("/_fake/control", json={"fail": "hang"})
            with pytest.raises(httpx.ReadTimeout):
                await http.post(LOGIN, json=GOOD, timeout=0.3)
            await http.post("/_fake/control", json={"fail": None})
            assert (await http.post(LOGIN, json=GOOD)).status_code == 200
            stats = (await http.get("/_fake/stats")).json()
            assert stats["login_calls"] == 5 and stats["refresh_calls"] == 1
    finally:
        stop.set()
        await asyncio.wait_for(server, 5)

    messages = [record.getMessage() for record in caplog.records]
    assert any(f"Running on http://127.0.0.1:{port}" in m for m in messages)
    assert not any(API_KEY in m for m in messages) and API_KEY not in caplog.text
    server = "bridge.doubles.fake_sentifyd.server"
    assert not any(r.name == server and r.exc_info for r in caplog.records)
