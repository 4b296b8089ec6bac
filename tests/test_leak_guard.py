"""The suite's leak guard (``tests/support/leaks.py``) finds what it is there to find: every
kind of secret, in every encoding, in every place a bridge could put it."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from urllib.parse import quote

import pytest
from quart import Quart, Response

from support import leaks as support_leaks
from support.app import login
from support.config import API_KEY, BRIDGE_KEY, SITE_KEY
from support.leaks import CREDENTIAL, SECRET, LeakGuard, variants

VALUE = "s3cr3t-value/with+odd=chars&more"


def encoded(value: str) -> dict[str, str]:
    data = value.encode()
    return {
        "plain": value,
        "url": quote(value, safe=""),
        "base64": base64.b64encode(data).decode(),
        "base64 after 1 byte": base64.b64encode(b"x" + data + b"yz").decode(),
        "base64 after 2 bytes": base64.b64encode(b"xy" + data).decode(),
        "base64url": base64.urlsafe_b64encode(data).decode().rstrip("="),
        "base64url after 1 byte": base64.urlsafe_b64encode(b"{" + data + b"}").decode(),
        "hex": binascii.hexlify(data).decode(),
        "HEX": binascii.hexlify(data).decode().upper(),
        "json": json.dumps({"v": value})[7:-2],
        "json in a JWT payload": base64.urlsafe_b64encode(
            json.dumps({"v": value}).encode()
        ).decode(),
    }


@pytest.mark.parametrize("encoding", list(encoded(VALUE)))
def test_a_secret_is_found_in_every_encoding(encoding: str) -> None:
    guard = LeakGuard()
    guard.add(VALUE, SECRET)
    text = "prefix " + encoded(VALUE)[encoding] + " suffix"
    guard.texts.append(support_leaks.Seen("log x", text, False))
    assert guard.leaks(), encoding


def test_the_report_never_quotes_the_secret() -> None:
    guard = LeakGuard()
    guard.add(VALUE, SECRET)
    guard.texts.append(support_leaks.Seen("log x", VALUE, False))
    assert all(VALUE not in line for line in guard.leaks())


def test_a_credential_may_travel_only_where_it_is_handed_out() -> None:
    guard = LeakGuard()
    guard.add(VALUE, CREDENTIAL)
    guard.texts += support_leaks.response_texts(
        [("Set-Cookie", f"c={VALUE}; HttpOnly")], "{}", endpoint="pages.first_avatar", status=200
    )
    assert guard.leaks() == []
    guard.texts += support_leaks.response_texts(
        [("X-Debug", VALUE)], VALUE, endpoint="pages.first_avatar", status=200
    )
    assert len({line.split(" in ")[1] for line in guard.leaks()}) == 2  # the header and the body


def test_short_names_are_not_secrets() -> None:
    assert variants("abc") == {}


def test_standing_secrets_include_every_key_of_the_tests_environment() -> None:
    guard = LeakGuard()
    for key in (API_KEY, BRIDGE_KEY, SITE_KEY):
        guard.texts.append(support_leaks.Seen("log x", key, False))
    assert len(guard.leaks()) >= 3


# --- the hooks, on a real bridge app --------------------------------------------------------


async def leaking_app(make_app: Callable[..., Quart]) -> Quart:
    app = make_app()

    @app.get("/leak/body")
    async def leak_body() -> Response:
        return Response(base64.b64encode(API_KEY.encode()).decode())

    @app.get("/leak/header")
    async def leak_header() -> Response:
        return Response("ok", headers={"X-Trace": quote(BRIDGE_KEY)})

    @app.get("/leak/log")
    async def leak_log() -> Response:
        logging.getLogger("some.library").info("key is %s", json.dumps({"k": SITE_KEY}))
        return Response("ok")

    @app.get("/leak/exception")
    async def leak_exception() -> Response:
        try:
            raise ValueError(binascii.hexlify(API_KEY.encode()).decode())
        except ValueError as exc:
            raise RuntimeError("wrapped") from exc

    return app


@pytest.mark.parametrize("where", ["body", "header", "log", "exception"])
async def test_the_hooks_see_answers_logs_and_exceptions(
    make_app: Callable[..., Quart], leak_guard: LeakGuard, where: str
) -> None:
    app = await leaking_app(make_app)
    async with app.test_app():
        await app.test_client().get(f"/leak/{where}")
    found = leak_guard.leaks()
    leak_guard.texts.clear()  # seen: this test's leaks are on purpose
    assert found, where


async def test_handles_and_sentifyd_tokens_are_collected_without_the_test(
    app: Quart, client: object, leak_guard: LeakGuard, fake_state: object
) -> None:
    login(client, app)  # type: ignore[arg-type]
    answer = await (await client.get("/request_tokens")).get_json()  # type: ignore[attr-defined]
    handle, access = answer["tokens"]["refreshToken"], answer["tokens"]["accessToken"]
    assert leak_guard.values[handle] == CREDENTIAL
    assert leak_guard.values[access] == CREDENTIAL
    assert leak_guard.values[fake_state.issued_refresh_tokens[-1]] == SECRET  # type: ignore[attr-defined]
    assert leak_guard.values[API_KEY] == SECRET  # every Secret the settings build
    logging.getLogger("bridge.test").info("handle %s", handle)
    assert leak_guard.leaks()
    leak_guard.texts.clear()


@pytest.mark.parametrize("where", ["body", "exception"])
async def test_the_hooks_see_the_token_endpoints_direct_path(
    make_app: Callable[..., Quart],
    leak_guard: LeakGuard,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    from bridge.web.routes import tokens

    async def leaky(bridge: object, request: object, avatar_name: str | None) -> Response:
        if where == "exception":
            raise RuntimeError(binascii.hexlify(API_KEY.encode()).decode())
        return Response(base64.b64encode(API_KEY.encode()).decode())

    monkeypatch.setattr(tokens, "answer", leaky)
    app = make_app()
    async with app.test_app():
        answer = await app.test_client().get("/request_tokens")
    assert answer.status_code == (500 if where == "exception" else 200)
    found = leak_guard.leaks()
    leak_guard.texts.clear()  # seen: this test's leaks are on purpose
    assert found, where
