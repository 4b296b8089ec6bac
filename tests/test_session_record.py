"""The session record's stored form: typed on the way in, JSON (msgspec's codec) on the way out."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from bridge.sessions.manager import (
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
        sealed=b"\x00sealed\xff",
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


def test_tokens_sealed_by_the_previous_version_still_open(settings: Any) -> None:
    # Records written before ``sealed`` held the blob as URL-safe base64 text in ``tokens``:
    # an upgrade must not cost every live session its tokens (nor a Sentifyd login each).
    from bridge.observe.lifecycle import Lifecycle
    from bridge.sessions.manager import SessionContext, SessionManager, TokenEntry, _encode
    from bridge.store.memory import MemoryStore

    store = MemoryStore()
    sessions = SessionManager(settings, store, Lifecycle(store))
    record, cookie = _record(), "c" * 43
    entry = TokenEntry(
        access_token="access",
        refresh_token="refresh",
        token_type="Bearer",
        expires_at=10.0,
        issued_at=1.0,
    )
    plain = _encode({"default": entry})
    legacy = msgspec.structs.replace(
        record, sealed=None, tokens=sessions.sealer.seal_bytes(cookie, record.id, plain)
    )
    stored = decode_record(encode_record(legacy))
    assert stored is not None and stored.has_tokens
    ctx = SessionContext(stored, cookie, stored.identity())
    assert sessions.open_tokens(ctx, stored) == {"default": entry}
    # The next write seals them the new way, and drops the old text.
    sessions.seal_tokens(ctx, stored, {"default": entry})
    assert stored.tokens is None and stored.sealed is not None
    assert sessions.open_tokens(ctx, stored) == {"default": entry}
    assert sessions.open_tokens(SessionContext(stored, "d" * 43, stored.identity()), stored) == {}


def test_token_entries_sealed_with_their_short_names_still_open(settings: Any) -> None:
    # The bytes the previous version sealed (TokenEntry's fields were at, rt, tt, exp, iat,
    # params): the readable names are stored under the same short ones.
    from bridge.observe.lifecycle import Lifecycle
    from bridge.sessions.manager import SessionContext, SessionManager, TokenEntry
    from bridge.store.memory import MemoryStore

    store = MemoryStore()
    sessions = SessionManager(settings, store, Lifecycle(store))
    record, cookie = _record(), "c" * 43
    old = (
        b'{"default":{"at":"access","rt":"refresh","tt":"Bearer","exp":10.0,"iat":1.0,'
        b'"params":{"voice":"en"}},"premium":{"at":"a2","rt":null,"tt":"Bearer","exp":9.0,'
        b'"iat":2.0}}'
    )
    record.sealed = sessions.sealer.seal_raw(cookie, record.id, old)
    stored = decode_record(encode_record(record))
    assert stored is not None
    ctx = SessionContext(stored, cookie, stored.identity())
    tokens = sessions.open_tokens(ctx, stored)
    assert tokens["default"] == TokenEntry(
        access_token="access",
        refresh_token="refresh",
        token_type="Bearer",
        expires_at=10.0,
        issued_at=1.0,
        avatar_params={"voice": "en"},
    )
    assert tokens["premium"].refresh_token is None and tokens["premium"].avatar_params == {}
    # Written back, they keep the short names (what an older instance beside it reads).
    sessions.seal_tokens(ctx, stored, tokens)
    assert stored.sealed is not None
    again = sessions.sealer.open_raw(cookie, stored.id, stored.sealed)
    assert again is not None and json.loads(again)["default"]["at"] == "access"


def test_provider_tokens_sealed_as_a_dict_by_the_previous_version_still_open(
    settings: Any,
) -> None:
    from bridge.observe.lifecycle import Lifecycle
    from bridge.sessions.manager import ProviderTokens, SessionManager
    from bridge.store.memory import MemoryStore

    store = MemoryStore()
    sessions = SessionManager(settings, store, Lifecycle(store))
    cookie, sid = "c" * 43, "a" * 32
    # How the previous version sealed them: json.dumps of a dict, nulls included.
    old = json.dumps({"id_token": "idt", "refresh_token": None}, separators=(",", ":"))
    sealed = sessions.sealer.seal_bytes(cookie, sid, old.encode())
    opened = sessions.open_provider_tokens(cookie, sid, sealed)
    assert opened == ProviderTokens(id_token="idt", refresh_token=None)
    new = sessions.seal_provider_tokens(cookie, sid, ProviderTokens(refresh_token="rt"))
    assert sessions.open_provider_tokens(cookie, sid, new).refresh_token == "rt"
    assert sessions.open_provider_tokens("d" * 43, sid, new) == ProviderTokens()
    assert sessions.open_provider_tokens(cookie, sid, "") == ProviderTokens()


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
