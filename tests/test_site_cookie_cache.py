"""The site cookie's verified-value cache: a hit is only an exact, verified, unexpired value."""

from __future__ import annotations

import pytest
from test_site_cookie import flask_cookie, source

import bridge.identity.site_cookie as site_cookie_module
from support.app import Clock


def test_a_verified_cookie_is_served_from_the_cache() -> None:
    src = source()
    value = flask_cookie({"user_id": "alice"})
    first = src.identity_of(value)
    assert first is not None and first.subject == "alice"
    assert value in src._verified
    assert src.identity_of(value) is first
    assert src.read(value) == {"user_id": "alice"}


def test_a_cached_cookie_expires_on_time() -> None:
    clock = Clock()
    src = source(max_age=60, clock=clock)
    value = str(src.serializer.dumps({"user_id": "alice"}))  # signed on the same clock
    assert src.identity_of(value) is not None
    clock.advance(60)
    assert src.identity_of(value) is not None  # from the cache, still within max_age
    clock.advance(1)
    assert src.identity_of(value) is None
    assert value not in src._verified


def test_forged_and_tampered_values_are_never_cached() -> None:
    src = source()
    good = flask_cookie({"user_id": "alice"})
    assert src.identity_of(good) is not None
    forged = flask_cookie({"user_id": "mallory"}, key="not-the-sites-key-0123456789abcdef")
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for value in (forged, tampered):
        assert src.identity_of(value) is None
        assert src.identity_of(value) is None
        assert value not in src._verified
    assert list(src._verified) == [good]


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(site_cookie_module, "VERIFIED_CACHE_SIZE", 3)
    src = source()
    values = [flask_cookie({"user_id": f"user-{i}"}) for i in range(5)]
    for value in values:
        assert src.identity_of(value) is not None
    assert list(src._verified) == values[2:]
