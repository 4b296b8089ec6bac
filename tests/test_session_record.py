"""The session record's stored form: typed on the way in, JSON (msgspec's codec) on the way out."""

from __future__ import annotations

import json

from bridge.sessions import Chain, Grace, SessionRecord, decode_record, encode_record


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
        extra={"oidc": {"sid": "x"}},
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
