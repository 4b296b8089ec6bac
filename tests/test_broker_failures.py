"""A failed Sentifyd call is shared only with the requests of the same session and avatar that
were already waiting for it, never with another session's (docs/mutation.md: the broker's
shared-failure memory is keyed by "session id:avatar").

The interleaving is set up on the broker's own fetch step, deterministically: a request that
asked (took its monotonic stamp) before a failure and reaches its fetch after it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from quart import Quart

from bridge.errors import UpstreamError
from bridge.identity import Identity
from bridge.wiring import Bridge


async def _session(bridge: Bridge, user: str) -> Any:
    return await bridge.sessions.create(Identity(subject=user, method="site_cookie"))


async def test_a_failure_is_shared_with_the_same_sessions_waiter_only(
    app: Quart, fake_state: Any
) -> None:
    bridge = Bridge.of(app)
    avatar = bridge.settings.avatars[0]
    alice, bob = await _session(bridge, "alice"), await _session(bridge, "bob")
    asked = time.monotonic()  # both of the next requests asked before alice's call failed

    fake_state.fail = "status:503"
    with pytest.raises(UpstreamError):
        await bridge.broker._fetch_tokens(alice, alice.record, avatar, False, asked)
    fake_state.fail = None
    calls = fake_state.login_calls

    # Alice's waiter that asked before the failure shares it: no second call for her session.
    with pytest.raises(UpstreamError):
        await bridge.broker._fetch_tokens(alice, alice.record, avatar, False, asked)
    assert fake_state.login_calls == calls

    # Bob asked at the same moment, but alice's failure is not his: he makes his own call.
    entry, event = await bridge.broker._fetch_tokens(bob, bob.record, avatar, False, asked)
    assert entry.access_token and event == "tokens_issued"
    assert fake_state.login_calls == calls + 1

    # And alice, asking again after her failure, is not refused on its account.
    entry, _ = await bridge.broker._fetch_tokens(
        alice, alice.record, avatar, False, time.monotonic()
    )
    assert entry.access_token
