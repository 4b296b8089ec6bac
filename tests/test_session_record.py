"""The session record's hand-written serialisation (kept fast on the token endpoint's path)."""

from __future__ import annotations

import dataclasses

from bridge.sessions import Chain, SessionRecord


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
                grace={"hash": "g" * 64, "at": 2.5, "sealed": "s"},
            ),
        ],
        extra={"oidc": {"sid": "x"}},
    )


def test_to_dict_matches_dataclasses_asdict() -> None:
    # A field added to the record or a chain but forgotten in to_dict fails here.
    record = _record()
    assert record.to_dict() == dataclasses.asdict(record)


def test_to_dict_round_trips() -> None:
    record = _record()
    assert SessionRecord.from_dict(record.to_dict()) == record


def test_to_dict_does_not_alias_the_records_containers() -> None:
    record = _record()
    data = record.to_dict()
    record.claims["groups"] = []
    record.chains[1].retired.append("z" * 64)
    record.chains[1].grace["at"] = 9.0  # type: ignore[index]
    assert data["claims"]["groups"] == ["customers"]
    assert data["chains"][1]["retired"] == ["r" * 64]
    assert data["chains"][1]["grace"]["at"] == 2.5
