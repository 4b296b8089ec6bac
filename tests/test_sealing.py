"""Sealing: what the store holds cannot be opened without the visitor's cookie."""

from __future__ import annotations

import base64

from bridge.secret import Secret
from bridge.sessions.sealing import SessionSealer, _b64, _unb64, open_with_handle, seal_with_handle

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
    # Sealing uses the newest key only: the old one alone cannot open what is sealed now.
    resealed = SessionSealer([KEY, OLD]).seal(COOKIE, "sid", {"rt": "y"})
    assert SessionSealer([KEY]).open(COOKIE, "sid", resealed) == {"rt": "y"}
    assert SessionSealer([OLD]).open(COOKIE, "sid", resealed) is None


def test_grace_answer_opens_only_with_the_old_handle() -> None:
    old, new = "h" * 43, "n" * 43
    sealed = seal_with_handle(old, new)
    assert open_with_handle(old, sealed) == new
    assert open_with_handle("g" * 43, sealed) is None


def test_key_derivation_is_rfc5869_hkdf() -> None:
    # The written-out HKDF must derive exactly the library's keys: records sealed before it
    # (and grace answers in flight during an upgrade) still open.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from bridge.sessions.sealing import _derive_with, _extractor

    for material, salt, info in (
        (COOKIE.encode(), KEY.reveal().encode(), b"sentifyd-bridge/session-tokens/v1"),
        (b"h" * 43, b"", b"sentifyd-bridge/handle-grace/v1"),
        (b"x", b"s" * 100, b""),
    ):
        expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info)
        assert _derive_with(_extractor(salt), material, info) == expected.derive(material)


def test_raw_sealing_is_bound_to_cookie_session_and_key() -> None:
    sealer = SessionSealer([KEY])
    sealed = sealer.seal_raw(COOKIE, "sid", b"upstream-refresh")
    assert b"upstream-refresh" not in sealed
    assert sealer.open_raw(COOKIE, "sid", sealed) == b"upstream-refresh"
    assert sealer.open_raw("d" * 43, "sid", sealed) is None
    assert sealer.open_raw(COOKIE, "other", sealed) is None
    assert sealer.open_raw(COOKIE, "sid", sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
    assert sealer.open_raw(COOKIE, "sid", sealed[:20]) is None
    assert SessionSealer([Secret("n" * 40), KEY]).open_raw(COOKIE, "sid", sealed) == (
        b"upstream-refresh"
    )


def test_an_empty_value_seals_and_opens() -> None:
    handle = "h" * 43
    sealed = seal_with_handle(handle, "")  # a nonce and a tag, nothing else: 28 bytes
    assert open_with_handle(handle, sealed) == ""


def test_blobs_too_short_to_hold_a_nonce_and_tag_open_to_nothing() -> None:
    sealer = SessionSealer([KEY])
    for length in range(0, 28):
        blob = base64.urlsafe_b64encode(b"x" * length).decode().rstrip("=")
        assert open_with_handle("h" * 43, blob) is None
        assert sealer.open_bytes(COOKIE, "sid", blob) is None


def test_a_sealed_value_that_is_not_an_object_opens_to_nothing() -> None:
    sealer = SessionSealer([KEY])
    sealed = sealer.seal_bytes(COOKIE, "sid", b"[1, 2]")
    assert sealer.open(COOKIE, "sid", sealed) is None


def test_a_value_of_several_fields_opens_as_sealed() -> None:
    sealer = SessionSealer([KEY])
    value = {"rt": "x", "at": "y", "n": [1, 2]}
    assert sealer.open(COOKIE, "sid", sealer.seal(COOKIE, "sid", value)) == value


def test_unpadded_base64_keeps_every_character_of_the_encoding() -> None:
    # Only the padding is stripped: a trailing "X" (or any base64 character) stays.
    assert _b64(b"\x00\x00\x17") == "AAAX"
    assert _unb64(_b64(b"\x00\x00\x17")) == b"\x00\x00\x17"
