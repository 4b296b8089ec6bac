"""Per-avatar access rules over the identity's claims."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.access.rules import is_allowed
from bridge.errors import ConfigError
from bridge.identity import Identity
from bridge.settings.values import AccessRules


def who(subject: str = "u1", **claims: Any) -> Identity:
    return Identity(subject=subject, method="site_cookie", claims=claims)


@pytest.mark.parametrize(
    ("rules", "identity", "allowed"),
    [
        ({}, who(), True),
        ({"groups": ["customers"]}, who(groups=["customers", "x"]), True),
        ({"groups": ["customers"]}, who(groups="staff customers"), True),
        ({"groups": ["customers"]}, who(groups=["staff"]), False),
        ({"groups": ["customers"]}, who(), False),
        ({"email_verified": True}, who(email_verified=True), True),
        ({"email_verified": True}, who(email_verified="true"), False),
        ({"email_verified": True}, who(), False),
        ({"email_domains": ["example.com"]}, who(email="a@Example.COM"), True),
        ({"email_domains": ["example.com"]}, who(email="a@evil-example.com"), False),
        ({"email_domains": ["example.com"]}, who(email="a@example.com.evil.io"), False),
        ({"email_domains": ["example.com"]}, who(email="a@b@example.com"), False),
        ({"users": ["u1"]}, who("u1"), True),
        ({"users": ["u1"]}, who("u2"), False),
        ({"claims": {"plan": ["gold", "silver"]}}, who(plan="gold"), True),
        ({"claims": {"plan": ["gold", "silver"]}}, who(plan="bronze"), False),
        ({"claims": {"tier": 3}}, who(tier=3), True),
        (
            {"groups": ["customers"], "email_verified": True},
            who(groups=["customers"], email_verified=False),
            False,
        ),
    ],
)
def test_rules(rules: dict[str, Any], identity: Identity, allowed: bool) -> None:
    assert is_allowed(AccessRules.parse(rules), identity) is allowed


@pytest.mark.parametrize(
    "rules",
    [
        {"group": ["a"]},
        {"groups": "customers"},
        {"groups": []},
        {"email_verified": "yes"},
        {"claims": []},
    ],
)
def test_wrong_rules_are_config_errors(rules: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        AccessRules.parse(rules)
