"""The session record's stored form: typed on the way in, JSON (msgspec's codec) on the way out."""

from __future__ import annotations

import json

from bridge.sessions import (
    Chain,
    Grace,
    ProviderSession,
    SessionExtra,
    SessionRecord,
    decode_record,
    encode_record,
)


def _record() -> SessionRecord:
    return SessionRecord(
        id="a" * 32,
        subject="alice",
        method="site_cookie",
        claims={"groups": ["customers"], "email_verified": True},
        created_at=1.0,
        last_seen=2.0,
        expires_at=3.0,
        tokens="sealed",
        chains=[
            Chain(id="c1", avatar="default", current="h" * 64, created_at=1.5),
            Chain(
                id="c2",
                avatar="premium",
                current="i" * 64,
                created_at=1.6,
                retired=["r" * 64],
                grace=Grace(hash="g" * 64, at=2.5, sealed="s"),
            ),
        ],
        extra=SessionExtra(oidc=_link()),
    )


def _link() -> ProviderSession:
    return ProviderSession(
        provider="corp", iss="https://id.example.com", sub="u1", sid="x", tokens="sealed-oidc"
    )


def test_a_record_round_trips_through_its_stored_bytes() -> None:
    record = _record()
    assert decode_record(encode_record(record)) == record


def test_the_stored_record_is_json_with_named_fields() -> None:
    # Readable with redis-cli, as before; defaults are left out to keep idle sessions small.
    stored = json.loads(encode_record(_record()))
    assert stored["subject"] == "alice" and stored["chains"][1]["grace"]["at"] == 2.5
    assert "grace" not in stored["chains"][0] and "counts" not in stored


def test_bytes_the_bridge_did_not_write_read_as_no_record() -> None:
    assert decode_record(b"not json") is None
    assert decode_record(b'{"id": "x"}') is None  # fields missing
    assert decode_record(b'{"v": 1}') is None


def test_the_oidc_part_is_typed_and_stored_where_it_was() -> None:
    stored = json.loads(encode_record(_record()))
    assert stored["extra"]["oidc"]["sid"] == "x" and stored["extra"]["oidc"]["iss"]
    decoded = decode_record(encode_record(_record()))
    assert decoded is not None and decoded.extra.oidc == _link()


def test_an_oidc_record_written_before_the_typed_form_still_reads() -> None:
    # The dict the previous version stored, nulls included.
    old = {
        "id": "b" * 32, "subject": "bob", "method": "oidc", "claims": {}, "created_at": 1.0,
        "last_seen": 2.0, "expires_at": 3.0,
        "extra": {"oidc": {
            "provider": "default", "iss": "https://id.example.com", "sub": "bob", "sid": None,
            "expires_at": 1700000000, "refreshable": True, "refresh_expires_at": None,
            "tokens": "sealed",
        }},
    }  # fmt: skip
    record = decode_record(json.dumps(old).encode())
    assert record is not None and record.extra.oidc is not None
    assert record.extra.oidc.sid is None and record.extra.oidc.expires_at == 1700000000.0
    assert record.extra.oidc.refreshable and record.extra.oidc.tokens == "sealed"


def test_a_session_without_a_provider_stores_no_extra() -> None:
    plain = SessionRecord(
        id="c" * 32, subject="carol", method="site_cookie", claims={}, created_at=1.0,
        last_seen=1.0, expires_at=2.0,
    )  # fmt: skip
    assert "extra" not in json.loads(encode_record(plain))
    decoded = decode_record(encode_record(plain))
    assert decoded is not None and decoded.extra.oidc is None
