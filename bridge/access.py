"""Per-avatar access rules over the identity's claims (checked at start-up by
:class:`bridge.settings.AccessRules`).

A rule table is a conjunction: every key must hold. Known keys:

- ``groups``: the identity's ``groups`` claim (a list, or a space/comma separated string)
  shares at least one entry with the list;
- ``email_verified``: the claim equals this boolean;
- ``email_domains``: the domain of the ``email`` claim is one of these (exact, case-insensitive);
- ``users``: the subject is one of these;
- ``claims``: a table of claim name to a value (equal) or a list (the claim, or one of its
  entries, is in the list).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.identity import Identity


def _as_set(value: Any) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        return {part for part in value.replace(",", " ").split() if part}
    if isinstance(value, list | tuple | set):
        return {str(v) for v in value}
    return {str(value)}


def _claim_matches(actual: Any, expected: Any) -> bool:
    if isinstance(expected, list):
        if isinstance(actual, list | tuple):
            return bool({str(a) for a in actual} & {str(e) for e in expected})
        return actual in expected
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    return bool(actual == expected)


def is_allowed(rules: Mapping[str, Any], identity: Identity) -> bool:
    """Tell whether ``identity`` passes every rule in ``rules`` (an empty table allows all)."""
    claims = identity.claims
    for key, expected in rules.items():
        if key == "groups":
            if not _as_set(claims.get("groups")) & set(expected):
                return False
        elif key == "email_verified":
            if claims.get("email_verified") is not expected:
                return False
        elif key == "email_domains":
            email = claims.get("email")
            if not isinstance(email, str) or email.count("@") != 1:
                return False
            domain = email.rsplit("@", 1)[1].lower()
            if domain not in {d.lower() for d in expected}:
                return False
        elif key == "users":
            if identity.subject not in expected:
                return False
        elif key == "claims":
            for claim, want in expected.items():
                if claim not in claims or not _claim_matches(claims[claim], want):
                    return False
        else:  # AccessRules keeps this unreachable; refuse rather than allow
            return False
    return True
