"""OpenID Connect Back-Channel Logout 1.0: a logout token ends exactly the sessions it names,
and every malformed, forged or replayed one is a 400 that ends nothing."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from support.app import Clock
from support.oidc import ControlledProvider, records, session_of, sign_in

EVENT = {"http://schemas.openid.net/event/backchannel-logout": {}}


@pytest.fixture
def app(sso_app: Quart) -> Quart:
    """The bridge signing in through ``op`` only (conftest's ``sso_app``)."""
    return sso_app


@pytest.fixture
async def people(app: Quart, op: ControlledProvider) -> dict[str, Client]:
    """Alice on two devices (two provider sessions) and Bob, all signed in."""
    clients = {"alice": app.test_client(), "alice2": app.test_client(), "bob": app.test_client()}
    await sign_in(clients["alice"], op)
    await sign_in(clients["alice2"], op, claims={"sid": "sid-alice-2"})
    await sign_in(clients["bob"], op, claims={"sub": "bob-sub", "sid": "sid-bob"})
    return clients


async def post(app: Quart, token: Any) -> Any:
    return await app.test_client().post("/backchannel-logout", form={"logout_token": token})


async def signed_in(people: dict[str, Client]) -> set[str]:
    return {name for name, client in people.items() if (await session_of(client))["signed_in"]}


async def assert_refused(app: Quart, people: dict[str, Client], token: Any) -> None:
    response = await post(app, token)
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_logout_token"
    assert await signed_in(people) == {"alice", "alice2", "bob"}


async def test_sid_ends_exactly_that_session(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    response = await post(app, op.sign(op.logout_claims(), header={"typ": "logout+jwt"}))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert await signed_in(people) == {"alice2", "bob"}


async def test_sub_alone_ends_all_of_that_users_sessions(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    response = await post(app, op.sign(op.logout_claims(sid=None)))
    assert response.status_code == 200
    assert await signed_in(people) == {"bob"}


async def test_sid_of_another_user_ends_no_one(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    response = await post(app, op.sign(op.logout_claims(sub="alice-sub", sid="sid-bob")))
    assert response.status_code == 200
    assert (await response.get_json())["sessions_ended"] == 0
    assert await signed_in(people) == {"alice", "alice2", "bob"}


async def test_unknown_sid_ends_no_one(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    response = await post(app, op.sign(op.logout_claims(sub=None, sid="sid-nobody")))
    assert response.status_code == 200
    assert await signed_in(people) == {"alice", "alice2", "bob"}


async def test_alg_none_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    op.metadata_extra["id_token_signing_alg_values_supported"] = ["RS256", "none"]
    await assert_refused(app, people, op.unsigned(op.logout_claims()))


async def test_bad_signature_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    impostor = ControlledProvider.new_key("k1")
    await assert_refused(app, people, op.sign(op.logout_claims(), key=impostor))


async def test_nonce_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    await assert_refused(app, people, op.sign(op.logout_claims(nonce="n-0S6_WzA2Mj")))


async def test_an_id_token_is_not_a_logout_token(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    await assert_refused(app, people, op.sign(op.claims("some-nonce")))


@pytest.mark.parametrize("aud", ["another-client", ["another-client"], None])
async def test_wrong_or_missing_aud_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client], aud: Any
) -> None:
    claims = op.logout_claims()
    claims.pop("aud")
    if aud is not None:
        claims["aud"] = aud
    await assert_refused(app, people, op.sign(claims))


async def test_wrong_iss_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    await assert_refused(app, people, op.sign(op.logout_claims(iss="https://evil.test")))


@pytest.mark.parametrize(
    "events",
    [None, {}, {"http://schemas.openid.net/event/other": {}}, "backchannel-logout",
     {"http://schemas.openid.net/event/backchannel-logout": "yes"}],
)  # fmt: skip
async def test_missing_or_wrong_events_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client], events: Any
) -> None:
    claims = op.logout_claims()
    claims.pop("events")
    if events is not None:
        claims["events"] = events
    await assert_refused(app, people, op.sign(claims))


async def test_replayed_jti_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    token = op.sign(op.logout_claims(sid="sid-nobody", sub=None))
    assert (await post(app, token)).status_code == 200
    await assert_refused(app, people, token)


async def test_missing_jti_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    claims = op.logout_claims()
    claims.pop("jti")
    await assert_refused(app, people, op.sign(claims))


async def test_missing_sub_and_sid_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    await assert_refused(app, people, op.sign(op.logout_claims(sub=None, sid=None)))


async def test_wrong_typ_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    await assert_refused(app, people, op.sign(op.logout_claims(), header={"typ": "at+jwt"}))


async def test_stale_or_expired_token_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client], clock: Clock
) -> None:
    now = int(clock())
    await assert_refused(app, people, op.sign(op.logout_claims(iat=now - 3600, exp=None)))
    await assert_refused(app, people, op.sign(op.logout_claims(iat=now - 200, exp=now - 100)))


@pytest.mark.parametrize("token", [None, "", "not.a.jwt", "a" * 20000, "e30.e30.e30"])
async def test_garbage_is_refused(app: Quart, people: dict[str, Client], token: Any) -> None:
    response = await app.test_client().post(
        "/backchannel-logout", form={} if token is None else {"logout_token": token}
    )
    assert response.status_code in (400, 413)
    assert await signed_in(people) == {"alice", "alice2", "bob"}


async def test_refused_tokens_change_nothing_stored(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    before = records(app)
    await post(app, op.sign(op.logout_claims(iss="https://evil.test")))
    assert records(app) == before


async def test_token_without_exp_is_refused(
    app: Quart, op: ControlledProvider, people: dict[str, Client]
) -> None:
    """Back-Channel Logout 1.0, 2.4: exp is required in a logout token."""
    await assert_refused(app, people, op.sign(op.logout_claims(exp=None)))


@pytest.mark.parametrize("payload_bytes", [9_000, 30_000])
async def test_payload_nested_beyond_the_stack_is_refused(
    app: Quart, people: dict[str, Client], payload_bytes: int
) -> None:
    """Under the token length cap, the unverified payload is parsed and must not crash; over it,
    it is never parsed at all."""
    nested = base64.urlsafe_b64encode(b"[" * payload_bytes).decode().rstrip("=")
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"k1"}').decode().rstrip("=")
    await assert_refused(app, people, f"{header}.{nested}.c2ln")
