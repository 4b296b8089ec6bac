"""Per-avatar access rules over the identity's claims (declared by
:class:`bridge.settings.values.AccessRules`).

A rule table is a conjunction: every rule given must hold. The rules:

- ``groups``: the identity's ``groups`` claim (a list, or a space/comma separated string)
  shares at least one entry with the list;
- ``email_verified``: the claim equals this boolean;
- ``email_domains``: the domain of the ``email`` claim is one of these (exact, case-insensitive);
- ``users``: the subject is one of these;
- ``claims``: a table of claim name to a value (equal) or a list (the claim, or one of its
  entries, is in the list).
"""

from __future__ import annotations

from typing import Any

import msgspec

from bridge.identity import Identity
from bridge.settings.values import AccessRules


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


def is_allowed(rules: AccessRules, identity: Identity) -> bool:
    """Tell whether ``identity`` passes every rule in ``rules`` (no rule allows all)."""
    claims = identity.claims
    if rules.groups and not _as_set(claims.get("groups")) & set(rules.groups):
        return False
    verified = rules.email_verified
    if verified is not msgspec.UNSET and claims.get("email_verified") is not verified:
        return False
    if rules.email_domains:
        email = claims.get("email")
        if not isinstance(email, str) or email.count("@") != 1:
            return False
        if email.rsplit("@", 1)[1].lower() not in {d.lower() for d in rules.email_domains}:
            return False
    if rules.users and identity.subject not in rules.users:
        return False
    return all(
        claim in claims and _claim_matches(claims[claim], want)
        for claim, want in rules.claims.items()
    )
