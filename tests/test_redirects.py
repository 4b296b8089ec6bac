"""Redirect targets: an open-redirect corpus that must always fall back to the default."""

from __future__ import annotations

import pytest

from bridge.settings.values import MAX_TARGET_LENGTH
from bridge.web.redirects import is_local_path, safe_next

OPEN_REDIRECTS = [
    "//evil.com",
    "//evil.com/",
    "///evil.com",
    "////evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "\\/evil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r\n/evil.com",
    "/%09/evil.com",
    "/%0d%0a/evil.com",
    "%2F%2Fevil.com",
    "/%2F/evil.com",
    "/%2f%2fevil.com",
    "/%5Cevil.com",
    "/%5c%5cevil.com",
    "/%252F%252Fevil.com",
    "https://evil.com",
    "http://evil.com",
    "HTTPS://evil.com",
    "https:evil.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.com",
    "@evil.com",
    "https://shop.example.com@evil.com",
    "//shop.example.com@evil.com",
    "https://shop.example.com.evil.com",
    "//shop.example.com%2eevil.com",
    "/ /evil.com",
    " //evil.com",
    "/\x00/evil.com",
    "\x7f//evil.com",
    "//%65vil.com",
    "",
    "/" + "a" * 3000,
]


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
def test_open_redirect_payloads_fall_back(target: str) -> None:
    assert safe_next(target, "/home") == "/home"


@pytest.mark.parametrize(
    "target", ["/", "/avatars/premium", "/a/b?c=d&e=f", "/a#frag", "/caf%C3%A9"]
)
def test_same_origin_paths_pass(target: str) -> None:
    assert safe_next(target) == target


def test_corpus_is_big_enough() -> None:
    assert len(OPEN_REDIRECTS) >= 30


@pytest.mark.parametrize("target", ["//evil.com/logout", "https://evil.com/", "/\\evil.com"])
def test_a_scheme_relative_or_absolute_url_is_not_a_local_path(target: str) -> None:
    assert not is_local_path(target)


@pytest.mark.parametrize("target", ["/", "/logout", "/account/sign-out?next=/"])
def test_a_path_on_this_site_is_local(target: str) -> None:
    assert is_local_path(target)


def test_a_target_of_the_longest_allowed_length_is_kept_and_one_more_is_not() -> None:
    longest = "/" + "a" * (MAX_TARGET_LENGTH - 1)
    assert safe_next(longest) == longest
    assert safe_next(longest + "a") == "/"


@pytest.mark.parametrize("target", ["/sale!", '/a"b', "/~me/?q=a+b#top"])
def test_printable_characters_are_kept(target: str) -> None:
    assert safe_next(target, "/home") == target


@pytest.mark.parametrize("target", ["/a\x7fb", "/a%7Fb", "/a%257Fb", "/a\x00b", "/a b"])
def test_delete_and_control_characters_are_refused_raw_and_encoded(target: str) -> None:
    assert safe_next(target, "/home") == "/home"
