"""The operator endpoints' bearer check: the scheme in any case, the token exactly."""

from __future__ import annotations

from typing import Any

import pytest

from support.config import make_settings
from support.ops import METRICS_TOKEN


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Bearer {METRICS_TOKEN}", 200),
        (f"bearer {METRICS_TOKEN}", 200),  # the scheme is case-insensitive (RFC 9110)
        (f"Bearer  {METRICS_TOKEN} ", 200),  # surrounding spaces are not the token's
        (f"Basic {METRICS_TOKEN}", 401),
        (f"{METRICS_TOKEN}", 401),
        (f"Bearer {METRICS_TOKEN}x", 401),
        (f"Bearer {METRICS_TOKEN[:-1]}", 401),
        (f"Bearer {METRICS_TOKEN} {METRICS_TOKEN}", 401),
        ("Bearer ", 401),
        ("Bearer", 401),
    ],
)
async def test_only_the_token_itself_opens_metrics(
    make_app: Any, authorization: str, status: int
) -> None:
    application = make_app(make_settings(env={"BRIDGE_METRICS_TOKEN": METRICS_TOKEN}))
    async with application.test_app():
        response = await application.test_client().get(
            "/metrics", headers={"Authorization": authorization}
        )
        assert response.status_code == status
