"""Ending a session always wins over requests already in flight, on one instance and on two.

A token request of the session waits on a Sentifyd that answers after 1.5 s; meanwhile the
session ends (logout, back-channel logout, admin revoke, site logout, or the visitor's "sign out
all other devices" from another browser). Once the ending has been answered, the request in
flight gets 401 and hands out nothing, the cookie gets 401 on every avatar and instance, the
record stays gone, and the user and sid indexes agree with the store.
With two instances on Redis, the request in flight is on one and the ending on the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bridge.sessions.manager import SessionManager
from support.traffic import (  # noqa: F401 - fixture
    ADMIN_TOKEN,
    COOKIE,
    STORES,
    Stack,
    sso_sign_in,
    stack_factory,
)

pytestmark = pytest.mark.integration

LATENCY = 1.5  # Sentifyd answers the request in flight after this long
TIMEOUT = 10.0


async def _logout(http: httpx.AsyncClient, stack: Stack) -> None:
    session = (await http.get(f"{stack.url(1)}/session")).json()
    ended = await http.post(
        f"{stack.url(1)}/logout",
        data={"csrf_token": session["logout"]["csrf_token"]},
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert ended.status_code == 303


async def _backchannel(http: httpx.AsyncClient, stack: Stack) -> None:
    token = stack.op.sign(stack.op.logout_claims(sub="carol-sub", sid="sid-carol"))
    async with httpx.AsyncClient(timeout=TIMEOUT) as provider:  # the provider's server
        ended = await provider.post(
            f"{stack.url(1)}/backchannel-logout", data={"logout_token": token}
        )
    assert ended.status_code == 200 and ended.json()["sessions_ended"] == 1


async def _admin_revoke(http: httpx.AsyncClient, stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as operator:
        ended = await operator.delete(
            f"{stack.url(1)}/admin/users/carol-sub/sessions",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert ended.status_code == 200 and ended.json()["ended"] == 1


async def _site_logout(http: httpx.AsyncClient, stack: Stack) -> None:
    http.cookies.delete("session")  # the site signed the visitor out: its cookie is gone
    ended = await http.get(f"{stack.url(1)}/request_tokens")
    assert ended.status_code == 401


async def _signed_out_by_another_device(http: httpx.AsyncClient, stack: Stack) -> None:
    # Her other browser, signed in to the site, on "my devices": "Sign out all other devices".
    async with httpx.AsyncClient(timeout=TIMEOUT) as laptop:
        laptop.cookies.set("session", stack.site_cookie("carol", groups=["customers"]))
        json = {"Accept": "application/json", "Sec-Fetch-Site": "same-origin"}
        page = (await laptop.get(f"{stack.url(1)}/account/sessions", headers=json)).json()
        assert len(page["sessions"]) == 1 and not page["sessions"][0]["current"]
        ended = await laptop.post(
            f"{stack.url(1)}{page['end_others_url']}",
            data={"csrf_token": page["csrf_token"]},
            headers=json,
        )
    assert ended.status_code == 200 and ended.json() == {"ended": 1}


ENDINGS: dict[str, Callable[[httpx.AsyncClient, Stack], Any]] = {
    "logout": _logout,
    "backchannel_logout": _backchannel,
    "admin_revoked": _admin_revoke,
    "site_logout": _site_logout,
    "user_signed_out_others": _signed_out_by_another_device,
}
SITE_LOGIN = ("site_logout", "user_signed_out_others")  # the rest sign in with SSO


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_an_ending_wins_over_a_token_request_in_flight(
    stack_factory: Callable[..., Stack],  # noqa: F811
    kind: str,
    ending: str,
) -> None:
    stack = stack_factory(kind)
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        if ending in SITE_LOGIN:
            user = "carol"
            http.cookies.set("session", stack.site_cookie(user, groups=["customers"]))
        else:
            user = "carol-sub"
            await sso_sign_in(http, stack, sub=user, sid="sid-carol")
        first = await http.get(f"{stack.url(0)}/request_tokens")
        assert first.status_code == 200
        handle = first.json()["tokens"]["refreshToken"]
        cookie = http.cookies[COOKIE]
        session_id = SessionManager.session_id(cookie)

        # The premium avatar has no cached tokens yet: this request waits on Sentifyd.
        stack.upstream.state.latency = LATENCY
        stack.upstream.reached.clear()
        in_flight = asyncio.create_task(http.get(f"{stack.url(0)}/request_tokens/premium"))
        assert await asyncio.to_thread(stack.upstream.reached.wait, TIMEOUT)
        await ENDINGS[ending](http, stack)
        assert not in_flight.done()  # the ending did not wait for it
        late = await in_flight
        stack.upstream.state.latency = 0

        assert late.status_code == 401, late.text
        assert "tokens" not in late.json()
        old_cookie = {"Cookie": f"{COOKIE}={cookie}"}
        async with httpx.AsyncClient(timeout=TIMEOUT) as browser:
            for url in stack.urls:
                for path in ("/request_tokens", "/request_tokens/premium"):
                    again = await browser.get(f"{url}{path}", headers=old_cookie)
                    assert again.status_code == 401, (url, path, again.text)
                replay = await browser.get(
                    f"{url}/request_tokens", params={"refreshToken": handle}, headers=old_cookie
                )
                assert replay.status_code == 401

        store = stack.inspector()
        try:
            assert await store.get(stack.bridge.sessions.record_key(session_id)) is None
            assert session_id not in await store.set_members(stack.bridge.sessions.user_key(user))
            if ending not in SITE_LOGIN:
                provider = next(iter(stack.oidc.providers.values()))
                sid_key = stack.oidc._sid_key(provider, "sid-carol")
                assert session_id not in await store.set_members(sid_key)
            events = await store.list_range(store.key("events", user), 50)
            ends = [e for e in events if e["event"] == "session_ended"]
            assert [e["reason"] for e in ends] == [ending]  # recorded once, for this session
            assert ends[0]["session"] == session_id
            # The tokens Sentifyd gave the request in flight were never handed out or recorded.
            issued = [e for e in events if e["event"] == "tokens_issued"]
            assert [e["avatar"] for e in issued] == ["default"]
        finally:
            if store is not stack.bridge.store:
                await store.close()
