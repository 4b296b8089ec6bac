"""user_field: a top-level key or an RFC 6901 pointer; lists give their first scalar."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.identity.fields import claims_of, parse_pointer, subject_of

SESSION: dict[str, Any] = {
    "user_id": 42,
    "passport": {"user": "u-7"},
    "warden.user.user.key": [[42], "$2a$10$salt"],
    "a/b": {"m~n": "escaped"},
    "nested": [[], [{"skip": 1}, ["deep"]], "later"],
    "list": ["first", "second"],
    "flag": True,
    "ratio": 1.5,
    "empty": "",
}


@pytest.mark.parametrize(
    ("field", "subject"),
    [
        ("user_id", "42"),  # numbers become their decimal text
        ("/passport/user", "u-7"),
        ("/warden.user.user.key", "42"),  # Devise: [[42], "salt"] -> 42
        ("/a~1b/m~0n", "escaped"),  # RFC 6901 escapes
        ("/nested", "deep"),  # depth first: the first scalar found
        ("/list/1", "second"),  # an array index
        ("passport", None),  # an object is not an id
        ("/passport/nobody", None),
        ("/list/01", None),  # leading zeros are not an index (RFC 6901)
        ("/list/9", None),
        ("flag", None),  # booleans are not ids
        ("ratio", None),  # nor fractions
        ("empty", None),
        ("missing", None),
    ],
)
def test_user_field(field: str, subject: str | None) -> None:
    assert subject_of(SESSION, field) == subject


def test_an_overlong_id_is_refused() -> None:
    assert subject_of({"user_id": "x" * 257}, "user_id") is None
    assert subject_of({"user_id": "x" * 256}, "user_id") == "x" * 256


def test_pointer_parsing_and_claims() -> None:
    assert parse_pointer("/a~1b/m~0n") == ("a/b", "m~n")
    assert parse_pointer("/") == ("",)
    with pytest.raises(ValueError):
        parse_pointer("no-slash")
    assert claims_of(SESSION, ["list", "missing", "flag"]) == {
        "list": ["first", "second"],
        "flag": True,
    }
