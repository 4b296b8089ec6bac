"""Typed values keep the bytes they had as dicts: what the store keeps, what the fake answers.

Issue 24 gave the store's values and the stand-in Sentifyd's answers types of their own; these
pin the JSON they write (keys, order, text) to what the dicts before them wrote.
"""

from __future__ import annotations

import json

import msgspec

from bridge.doubles.fake_sentifyd import FakeState
from bridge.sessions.manager import Block
from bridge.sessions.oidc_login import PendingLogin, _pending_login
from bridge.store.base import JSONObject
from bridge.store.memory import MemoryStore
from bridge.store.redis import _dumps


def _pending() -> PendingLogin:
    return PendingLogin(
        provider="zoë",
        nonce="n",
        verifier="v",
        next="/après",
        binding="b" * 64,
        created=1700000000.125,
    )


# The same login state as the plain dict earlier versions stored (key order included).
PENDING_AS_DICT: JSONObject = {
    "provider": "zoë",
    "nonce": "n",
    "verifier": "v",
    "next": "/après",
    "binding": "b" * 64,
    "created": 1700000000.125,
}


def test_a_block_is_stored_as_the_until_object_it_always_was() -> None:
    assert msgspec.to_builtins(Block(1700000000.5)) == {"until": 1700000000.5}


def test_a_login_state_keeps_its_keys_in_their_order() -> None:
    plain = msgspec.to_builtins(_pending())
    assert list(plain) == ["provider", "nonce", "verifier", "next", "binding", "created"]
    assert plain == PENDING_AS_DICT
    # Redis keeps json.dumps' text (non-ASCII escaped), as for the dict before.
    assert _dumps(plain) == json.dumps(PENDING_AS_DICT, separators=(",", ":"))


async def test_the_memory_store_keeps_the_same_bytes_for_a_typed_value() -> None:
    store = MemoryStore()
    await store.set("k:typed", msgspec.to_builtins(_pending()), 30)
    await store.set("k:dict", PENDING_AS_DICT, 30)
    entries = store.entries()
    assert entries["k:typed"][0] == entries["k:dict"][0]


def test_a_stored_login_state_reads_back_and_anything_else_reads_as_none() -> None:
    assert _pending_login(msgspec.to_builtins(_pending())) == _pending()
    assert _pending_login(None) is None
    assert _pending_login({"provider": "p"}) is None
    assert _pending_login({**msgspec.to_builtins(_pending()), "created": "soon"}) is None


def test_the_fake_answers_each_shape_with_its_keys_in_their_order() -> None:
    expected = {
        "wrapped_snake": ["access_token", "refresh_token", "avatar_params", "token_type"]
        + ["expires_in"],
        "flat_snake": ["access_token", "refresh_token", "avatar_params", "token_type"]
        + ["expires_in"],
        "no_expiry": ["access_token", "refresh_token", "avatar_params", "token_type"],
        "wrapped_camel": ["accessToken", "refreshToken", "tokenType", "expiresIn"]
        + ["avatarParameters"],
        "flat_camel": ["accessToken", "refreshToken", "tokenType", "expiresIn", "avatarParams"],
    }
    for shape, keys in expected.items():
        answer = dict(FakeState(shape=shape).issue("avatar-1"))
        data = answer["data"] if "data" in answer else answer
        assert list(answer) == (["data"] if shape.startswith(("wrapped", "no_")) else keys)
        assert list(data) == keys, shape
        params = (
            data.get("avatar_params") or data.get("avatarParams") or data.get("avatarParameters")
        )
        assert params == {
            "name": "Ava",
            "voice": "en-US-1",
            "theme": {"primaryColor": "#4f46e5"},
            "language": "en",
        }
