"""Sealing: what the store holds cannot be opened without the visitor's cookie."""

from __future__ import annotations

from bridge.sealing import SessionSealer, open_with_handle, seal_with_handle
from bridge.secret import Secret

KEY = Secret("k" * 40)
OLD = Secret("o" * 40)
COOKIE = "c" * 43


def test_roundtrip() -> None:
    sealer = SessionSealer([KEY])
    sealed = sealer.seal(COOKIE, "sid", {"rt": "upstream-refresh"})
    assert "upstream-refresh" not in sealed
    assert sealer.open(COOKIE, "sid", sealed) == {"rt": "upstream-refresh"}


def test_other_cookie_or_session_cannot_open() -> None:
    sealer = SessionSealer([KEY])
    sealed = sealer.seal(COOKIE, "sid", {"rt": "x"})
    assert sealer.open("d" * 43, "sid", sealed) is None
    assert sealer.open(COOKIE, "other-sid", sealed) is None
    assert sealer.open(COOKIE, "sid", sealed[:-2] + "AA") is None
    assert sealer.open(COOKIE, "sid", "!!not-base64") is None


def test_bridge_key_rotation() -> None:
    sealed = SessionSealer([OLD]).seal(COOKIE, "sid", {"rt": "x"})
    assert SessionSealer([KEY, OLD]).open(COOKIE, "sid", sealed) == {"rt": "x"}
    assert SessionSealer([KEY]).open(COOKIE, "sid", sealed) is None


def test_grace_answer_opens_only_with_the_old_handle() -> None:
    old, new = "h" * 43, "n" * 43
    sealed = seal_with_handle(old, new)
    assert open_with_handle(old, sealed) == new
    assert open_with_handle("g" * 43, sealed) is None
