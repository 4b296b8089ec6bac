"""The relying party against a provider the tests control: one test per OpenID conformance RP
check (ID token and back-channel logout token), the callback's state/iss checks, refresh,
logout with its CSRF token, and /session."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from quart import Quart
from quart.typing import TestClientProtocol as Client
from test_redirects import OPEN_REDIRECTS

from bridge.identity.oidc import FETCH_BACKOFF
from bridge.wiring import Bridge
from support.app import Clock
from support.config import PUBLIC_URL
from support.oidc import (
    OP_CLIENT_SECRET,
    ControlledProvider,
    b64,
    callback,
    make_sso_app,
    query_of,
    records,
    session_of,
    sign_in,
    start,
)

ORIGIN = {"Origin": PUBLIC_URL}


@pytest.fixture
def app(sso_app: Quart) -> Quart:
    """The bridge signing in through ``op`` only (conftest's ``sso_app``)."""
    return sso_app


# --- the happy path ---------------------------------------------------------------------------


async def test_login_starts_a_fresh_session_and_returns_to_next(
    app: Quart, op: ControlledProvider
) -> None:
    client = app.test_client()
    params = await start(client, "/avatars/premium")
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
    response = await callback(client, op, params)
    assert response.status_code == 303 and response.headers["Location"] == "/avatars/premium"
    assert "HttpOnly" in response.headers["Set-Cookie"]
    body = await session_of(client)
    assert body["signed_in"] is True and body["user"]["subject"] == "alice-sub"
    assert [a["name"] for a in body["avatars"]] == ["default", "premium"]
    token = op.sent("/token")[-1]
    assert token.url.path == "/token"
    form = dict(x.split("=", 1) for x in token.content.decode().split("&"))
    assert form["grant_type"] == "authorization_code" and len(form["code_verifier"]) >= 43
    assert token.headers["Authorization"].startswith("Basic ")  # client_secret_basic


async def test_client_secret_post_sends_the_secret_in_the_body(
    op: ControlledProvider, clock: Clock, fake: Quart
) -> None:
    application = make_sso_app(op, clock, fake, token_endpoint_auth_method="client_secret_post")
    async with application.test_app():
        client = application.test_client()
        assert (await sign_in(client, op)).status_code == 303
        token = op.sent("/token")[-1]
        assert "Authorization" not in token.headers
        assert f"client_secret={OP_CLIENT_SECRET}" in token.content.decode()


async def test_a_new_login_never_reuses_the_old_session_id(
    app: Quart, op: ControlledProvider
) -> None:
    client = app.test_client()
    first = await sign_in(client, op)
    second = await sign_in(client, op, claims={"sub": "bob-sub", "sid": "sid-bob"})
    cookie = lambda r: r.headers["Set-Cookie"].split(";")[0]  # noqa: E731
    assert cookie(first) != cookie(second)
    assert [r["subject"] for r in records(app)] == ["bob-sub"]


# --- ID token checks (OpenID conformance, RP) ---------------------------------------------------


async def test_invalid_iss_is_refused(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"], iss="https://evil.test")))
    assert (await callback(client, op, params)).status_code == 400
    assert records(app) == []


@pytest.mark.parametrize("aud", ["someone-else", ["someone-else"], None])
async def test_invalid_or_missing_aud_is_refused(
    app: Quart, op: ControlledProvider, aud: Any
) -> None:
    client = app.test_client()
    params = await start(client)
    claims = op.claims(params["nonce"])
    claims.pop("aud")
    if aud is not None:
        claims["aud"] = aud
    await refused_with(client, op, app, params, op.sign(claims))


async def refused_with(
    client: Client, op: ControlledProvider, app: Quart, params: dict[str, str], id_token: str
) -> None:
    op.token_response = op.tokens(id_token)
    response = await callback(client, op, params)
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "login_failed"
    assert records(app) == []


async def test_several_audiences_need_azp(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    claims = op.claims(params["nonce"], aud=[op.client_id, "other"])
    await refused_with(client, op, app, params, op.sign(claims))


async def test_azp_of_another_client_is_refused(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    await refused_with(
        client, op, app, params, op.sign(op.claims(params["nonce"], azp="other-client"))
    )


async def test_bad_signature_is_refused(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    impostor = ControlledProvider.new_key("k1")  # same kid, different key
    await refused_with(client, op, app, params, op.sign(op.claims(params["nonce"]), key=impostor))


async def test_tampered_payload_is_refused(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    head, _, sig = op.sign(op.claims(params["nonce"])).split(".")
    forged = b64(json.dumps(op.claims(params["nonce"], sub="admin")).encode())
    await refused_with(client, op, app, params, f"{head}.{forged}.{sig}")


async def test_alg_none_is_refused(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    op.metadata_extra["id_token_signing_alg_values_supported"] = ["RS256", "none"]
    await refused_with(client, op, app, params, op.unsigned(op.claims(params["nonce"])))


async def test_hs256_keyed_with_the_client_secret_is_refused(
    app: Quart, op: ControlledProvider
) -> None:
    client = app.test_client()
    params = await start(client)
    op.metadata_extra["id_token_signing_alg_values_supported"] = ["RS256", "HS256"]
    key = OctKey.import_key(OP_CLIENT_SECRET)
    token = jwt.encode({"alg": "HS256"}, op.claims(params["nonce"]), key, algorithms=["HS256"])
    await refused_with(client, op, app, params, token)


@pytest.mark.parametrize("nonce", ["not-the-nonce", None])
async def test_wrong_or_missing_nonce_is_refused(
    app: Quart, op: ControlledProvider, nonce: str | None
) -> None:
    client = app.test_client()
    params = await start(client)
    await refused_with(client, op, app, params, op.sign(op.claims(nonce)))


async def test_expired_id_token_is_refused(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    params = await start(client)
    now = int(clock())
    claims = op.claims(params["nonce"], iat=now - 3600, exp=now - 61)  # beyond the 60 s leeway
    await refused_with(client, op, app, params, op.sign(claims))


async def test_id_token_issued_in_the_future_is_refused(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    params = await start(client)
    claims = op.claims(params["nonce"], iat=int(clock()) + 120)
    await refused_with(client, op, app, params, op.sign(claims))


async def test_small_clock_skew_is_tolerated(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    now = int(clock())
    response = await sign_in(client, op, claims={"iat": now + 30, "exp": now - 30})
    assert response.status_code == 303


async def test_at_hash_mismatch_is_refused(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    await refused_with(
        client,
        op,
        app,
        params,
        op.sign(op.claims(params["nonce"], at_hash="AAAAAAAAAAAAAAAAAAAAAA")),
    )


async def test_rotated_key_is_accepted_after_jwks_refresh(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    assert (await sign_in(client, op)).status_code == 303  # the bridge now caches k1
    new_key = ControlledProvider.new_key("k2")
    op.keys, op.published = [new_key], [new_key]
    clock.advance(11)
    other = app.test_client()
    assert (await sign_in(other, op, claims={"sub": "bob-sub"})).status_code == 303
    jwks_fetches = op.sent("/jwks")
    assert len(jwks_fetches) == 2


async def test_unknown_kid_is_refused(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    stranger = ControlledProvider.new_key("k-unknown")
    await refused_with(client, op, app, params, op.sign(op.claims(params["nonce"]), key=stranger))


async def test_unknown_kids_do_not_hammer_the_provider(app: Quart, op: ControlledProvider) -> None:
    stranger = ControlledProvider.new_key("k-unknown")
    for _ in range(5):
        client = app.test_client()
        params = await start(client)
        await refused_with(
            client, op, app, params, op.sign(op.claims(params["nonce"]), key=stranger)
        )
    assert len(op.sent("/jwks")) == 1


# --- the callback ---------------------------------------------------------------------------


async def test_callback_from_another_browser_is_refused(app: Quart, op: ControlledProvider) -> None:
    victim, attacker = app.test_client(), app.test_client()
    params = await start(attacker)
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
    response = await callback(victim, op, params)
    assert response.status_code == 400 and records(app) == []


async def test_state_is_single_use(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
    assert (await callback(client, op, params)).status_code == 303
    assert (await callback(client, op, params)).status_code == 400


@pytest.mark.parametrize("state", ["", "made-up-state", "x" * 5000])
async def test_unknown_state_is_refused(app: Quart, op: ControlledProvider, state: str) -> None:
    client = app.test_client()
    await start(client)
    response = await callback(client, op, {"state": state})
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "login_failed"


async def test_failed_callback_shows_a_browser_a_page_with_a_way_forward(
    app: Quart, op: ControlledProvider
) -> None:
    client = app.test_client()
    await start(client)
    response = await client.get(
        "/callback",
        query_string={"code": "c", "state": "made-up-state", "iss": op.issuer},
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )
    assert response.status_code == 400
    assert response.content_type.startswith("text/html")
    html = (await response.get_data()).decode()
    assert "Sign-in did not complete" in html and 'href="/login"' in html
    assert "made-up-state" not in html
    assert response.headers["Cache-Control"] == "no-store"


async def test_expired_state_is_refused(app: Quart, op: ControlledProvider, clock: Clock) -> None:
    client = app.test_client()
    params = await start(client)
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
    clock.advance(601)
    assert (await callback(client, op, params)).status_code == 400


async def test_rfc9207_iss_of_another_provider_is_refused(
    app: Quart, op: ControlledProvider
) -> None:
    client = app.test_client()
    params = await start(client)
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
    response = await callback(client, op, params, iss="https://attacker.test")
    assert response.status_code == 400
    assert not op.sent("/token")  # the code never left


async def test_rfc9207_missing_iss_is_refused_when_the_provider_sends_it(
    app: Quart, op: ControlledProvider
) -> None:
    client = app.test_client()
    params = await start(client)
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
    assert (await callback(client, op, params, iss=None)).status_code == 400


async def test_missing_iss_is_fine_when_the_provider_does_not_send_it(
    app: Quart, op: ControlledProvider
) -> None:
    op.metadata_extra["authorization_response_iss_parameter_supported"] = False
    client = app.test_client()
    params = await start(client)
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
    assert (await callback(client, op, params, iss=None)).status_code == 303


async def test_provider_error_is_a_clear_400(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    response = await client.get(
        "/callback", query_string={"state": params["state"], "error": "access_denied"}
    )
    body = await response.get_json()
    assert response.status_code == 400
    assert body["error"] == "login_failed" and body["provider_error"] == "access_denied"


async def test_refused_code_is_a_clear_400(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    params = await start(client)
    op.token_status, op.token_response = 400, {"error": "invalid_grant"}
    response = await callback(client, op, params)
    assert response.status_code == 400 and records(app) == []


async def test_discovery_naming_another_issuer_is_refused(
    app: Quart, op: ControlledProvider
) -> None:
    op.metadata_extra["issuer"] = "https://evil.test"
    response = await app.test_client().get("/login")
    assert response.status_code == 503
    assert (await response.get_json())["error"] == "identity_provider_unavailable"


async def test_provider_down_is_503_and_recovers(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    """After a failed fetch the provider is left alone for the backoff, then asked again."""
    client = app.test_client()
    op.down = True
    response = await client.get("/login")
    assert response.status_code == 503 and response.headers["Retry-After"]
    op.down = False
    asked = len(op.requests)
    assert (await client.get("/login")).status_code == 503
    assert len(op.requests) == asked  # backing off: not asked again yet
    clock.advance(FETCH_BACKOFF)
    assert (await client.get("/login")).status_code == 302


async def test_userinfo_claims_are_added_when_configured(
    op: ControlledProvider, clock: Clock, fake: Quart
) -> None:
    application = make_sso_app(op, clock, fake, claims_from_userinfo=["groups"])
    async with application.test_app():
        client = application.test_client()
        op.userinfo = {"sub": "alice-sub", "groups": ["vip"], "email": "other@example.com"}
        assert (await sign_in(client, op, claims={"groups": None})).status_code == 303
        [record] = records(application)
        assert record["claims"]["groups"] == ["vip"]
        assert record["claims"]["email"] == "alice@example.com"  # only the named claims


async def test_userinfo_of_another_subject_is_refused(
    op: ControlledProvider, clock: Clock, fake: Quart
) -> None:
    application = make_sso_app(op, clock, fake, claims_from_userinfo=True)
    async with application.test_app():
        client = application.test_client()
        op.userinfo = {"sub": "mallory", "groups": ["customers"]}
        assert (await sign_in(client, op)).status_code == 400
        assert records(application) == []


# --- the session and the provider's tokens --------------------------------------------------------


async def test_provider_tokens_are_sealed(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    await sign_in(client, op)
    dump = repr(Bridge.of(app).store.snapshot())  # type: ignore[attr-defined]
    assert "op-refresh-token-value" not in dump and "op-access-token-value" not in dump
    assert op.token_response is not None and op.token_response["id_token"] not in dump


async def test_refused_refresh_ends_the_session(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    await sign_in(client, op)
    assert (await client.get("/request_tokens")).status_code == 200
    ended: list[dict[str, Any]] = []
    Bridge.of(app).lifecycle.listeners.append(ended.append)
    clock.advance(290)  # the access token (300 s) is due; the provider says no
    response = await client.get("/request_tokens")
    assert response.status_code == 401
    assert (await response.get_json())["login_url"] == "/login?next=%2F"
    assert [e["reason"] for e in ended if e["event"] == "session_ended"] == ["upstream_refused"]
    assert records(app) == []


async def test_accepted_refresh_keeps_the_session_and_updates_claims(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    await sign_in(client, op)
    clock.advance(290)
    op.refresh_response = op.tokens(
        op.sign(op.claims(None, groups=["customers", "vip"])), refresh_token="rotated"
    )
    assert (await client.get("/request_tokens/premium")).status_code == 200
    [record] = records(app)
    assert record["claims"]["groups"] == ["customers", "vip"]
    refresh = [r for r in op.requests if b"grant_type=refresh_token" in r.content]
    assert len(refresh) == 1 and b"scope" not in refresh[0].content


async def test_refresh_with_id_token_of_another_subject_ends_the_session(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    await sign_in(client, op)
    clock.advance(290)
    op.refresh_response = op.tokens(op.sign(op.claims(None, sub="mallory")))
    assert (await client.get("/request_tokens")).status_code == 401
    assert records(app) == []


async def test_provider_down_at_refresh_is_503_and_keeps_the_session(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    await sign_in(client, op)
    clock.advance(290)
    op.down = True
    response = await client.get("/request_tokens")
    assert response.status_code == 503
    assert len(records(app)) == 1


async def test_session_without_refresh_token_lasts_no_longer_than_the_tokens(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    await sign_in(client, op, refresh_token=None, expires_in=600)
    body = await session_of(client)
    assert body["session"]["absolute_expires_at"] == int(clock()) + 600
    clock.advance(601)
    assert (await session_of(client))["signed_in"] is False


async def test_session_lasts_no_longer_than_max_session_age(
    op: ControlledProvider, clock: Clock, fake: Quart
) -> None:
    application = make_sso_app(op, clock, fake, max_session_age=900)
    async with application.test_app():
        client = application.test_client()
        await sign_in(client, op, claims={"auth_time": int(clock()) - 300})
        body = await session_of(client)
        assert body["session"]["absolute_expires_at"] == int(clock()) + 600


# --- logout -----------------------------------------------------------------------------------


async def test_logout_needs_the_sessions_csrf_token(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    await sign_in(client, op)
    for token in (None, "0" * 64, "nonsense"):
        data = {"csrf_token": token} if token else {}
        response = await client.post("/logout", form=data, headers=ORIGIN)
        assert response.status_code == 403
        assert (await response.get_json())["error"] == "invalid_csrf_token"
    assert (await session_of(client))["signed_in"] is True


async def test_logout_from_another_site_is_refused(app: Quart, op: ControlledProvider) -> None:
    client = app.test_client()
    await sign_in(client, op)
    token = (await session_of(client))["logout"]["csrf_token"]
    for headers in ({"Origin": "https://evil.test"}, {"Sec-Fetch-Site": "cross-site"}):
        response = await client.post("/logout", form={"csrf_token": token}, headers=headers)
        assert response.status_code == 403
        assert (await response.get_json())["error"] == "cross_site_request"
    assert (await session_of(client))["signed_in"] is True


async def test_csrf_token_of_another_session_does_not_work(
    app: Quart, op: ControlledProvider
) -> None:
    alice, bob = app.test_client(), app.test_client()
    await sign_in(alice, op)
    await sign_in(bob, op, claims={"sub": "bob-sub", "sid": "sid-bob"})
    bobs = (await session_of(bob))["logout"]["csrf_token"]
    response = await alice.post("/logout", form={"csrf_token": bobs}, headers=ORIGIN)
    assert response.status_code == 403


async def test_logout_ends_the_session_and_signs_out_at_the_provider(
    app: Quart, op: ControlledProvider
) -> None:
    client = app.test_client()
    await sign_in(client, op)
    assert (await client.get("/request_tokens")).status_code == 200
    id_token = op.token_response["id_token"] if op.token_response else ""
    token = (await session_of(client))["logout"]["csrf_token"]
    response = await client.post("/logout", form={"csrf_token": token}, headers=ORIGIN)
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.startswith(f"{op.issuer}/logout?")
    params = query_of(location)
    assert params["id_token_hint"] == id_token
    assert params["post_logout_redirect_uri"] == f"{PUBLIC_URL}/"
    assert "sentifyd_bridge=;" in response.headers["Set-Cookie"]
    assert records(app) == []
    assert (await client.get("/request_tokens")).status_code == 401
    revoke = op.sent("/revoke")
    assert len(revoke) == 1 and b"op-refresh-token-value" in revoke[0].content


async def test_logout_without_end_session_endpoint_goes_to_the_post_logout_page(
    op: ControlledProvider, clock: Clock, fake: Quart
) -> None:
    op.metadata_extra["end_session_endpoint"] = None
    application = make_sso_app(op, clock, fake, post_logout_redirect_path="/bye")
    async with application.test_app():
        client = application.test_client()
        await sign_in(client, op)
        token = (await session_of(client))["logout"]["csrf_token"]
        response = await client.post("/logout", form={"csrf_token": token}, headers=ORIGIN)
        assert response.status_code == 303 and response.headers["Location"] == "/bye"


async def test_avatar_page_signs_out_with_a_post_form_and_the_token(
    app: Quart, op: ControlledProvider
) -> None:
    client = app.test_client()
    await sign_in(client, op)
    page = (await (await client.get("/")).get_data()).decode()
    token = (await session_of(client))["logout"]["csrf_token"]
    assert 'method="post" action="/logout"' in page
    assert f'name="csrf_token" value="{token}"' in page


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
async def test_logout_redirect_stays_on_this_site(app: Quart, target: str) -> None:
    response = await app.test_client().post("/logout", form={"next": target}, headers=ORIGIN)
    assert response.status_code == 303 and response.headers["Location"] == "/"


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
async def test_login_next_stays_on_this_site(
    app: Quart, op: ControlledProvider, target: str
) -> None:
    client = app.test_client()
    response = await client.get("/login", query_string={"next": target})
    params = query_of(response.headers["Location"])
    op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
    response = await callback(client, op, params)
    assert response.status_code == 303 and response.headers["Location"] == "/"


async def test_unauthenticated_page_redirects_to_login(app: Quart) -> None:
    response = await app.test_client().get("/avatars/premium")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=%2Favatars%2Fpremium"


async def test_session_endpoint_when_signed_out(app: Quart) -> None:
    response = await app.test_client().get("/session")
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.get_json() == {"signed_in": False, "login_url": "/login?next=%2F"}


async def test_session_endpoint_when_signed_in(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    await sign_in(client, op, claims={"groups": ["staff"]})
    body = await session_of(client)
    assert body["user"] == {"subject": "alice-sub", "name": "Alice", "email": "alice@example.com"}
    assert body["avatars"] == [
        {"name": "default", "title": "default", "page": "/", "token_endpoint": "/request_tokens"}
    ]
    assert body["session"]["expires_at"] == int(clock()) + 1800  # the idle timeout comes first
    assert body["logout"]["url"] == "/logout" and len(body["logout"]["csrf_token"]) == 64


async def test_sid_index_lives_as_long_as_the_session_can(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    store = Bridge.of(app).store
    ttls: dict[str, float] = {}
    original = store.set_add

    async def recording_set_add(key: str, member: str, ttl: float) -> None:
        ttls[key] = ttl
        await original(key, member, ttl)

    store.set_add = recording_set_add  # type: ignore[method-assign]
    client = app.test_client()
    await sign_in(client, op, expires_in=3600)
    [index_ttl] = [ttl for key, ttl in ttls.items() if ":oidc-sid:" in key]
    [record] = records(app)
    # Not the idle TTL (which activity renews on the record but not on the index).
    assert index_ttl >= record["expires_at"] - clock()
    token = op.sign(op.logout_claims(sub=None))
    assert (
        await client.post("/backchannel-logout", form={"logout_token": token})
    ).status_code == 200
    assert (await session_of(client))["signed_in"] is False


async def test_no_secret_reaches_a_log_line(
    app: Quart, op: ControlledProvider, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    client = app.test_client()
    response = await sign_in(client, op)
    cookie = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    id_token = op.token_response["id_token"] if op.token_response else ""
    clock.advance(290)
    op.refresh_response = op.tokens(op.sign(op.claims(None)), refresh_token="op-rotated-refresh")
    assert (await client.get("/request_tokens")).status_code == 200
    csrf = (await session_of(client))["logout"]["csrf_token"]
    await client.post("/logout", form={"csrf_token": csrf}, headers=ORIGIN)
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert logged  # the flow was logged
    for secret in (
        OP_CLIENT_SECRET, "op-refresh-token-value", "op-rotated-refresh",
        "op-access-token-value", id_token, cookie, csrf, "the-code",
    ):  # fmt: skip
        assert secret not in logged


async def test_provider_session_lifetime_is_enforced_without_a_refresh(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    await sign_in(client, op, refresh_expires_in=600, expires_in=3000)  # as Keycloak tells it
    clock.advance(599)
    assert (await session_of(client))["signed_in"] is True
    clock.advance(2)
    assert (await session_of(client))["signed_in"] is False


async def test_provider_session_lifetime_is_renewed_by_a_refresh(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    await sign_in(client, op, refresh_expires_in=600)
    op.refresh_response = op.tokens(op.sign(op.claims(None)), refresh_expires_in=600)
    clock.advance(290)
    assert (await client.get("/request_tokens")).status_code == 200  # renewed until 890
    clock.advance(400)  # past the first lifetime (600), within the renewed one
    op.refresh_response = op.tokens(op.sign(op.claims(None)), refresh_expires_in=600)
    assert (await client.get("/request_tokens")).status_code == 200
    assert (await session_of(client))["signed_in"] is True


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, {"error": "server_error"}), (400, {"error": "temporarily_unavailable"}), (502, {})],
)
async def test_provider_trouble_at_refresh_is_503_not_a_logout(
    app: Quart, op: ControlledProvider, clock: Clock, status: int, body: dict[str, Any]
) -> None:
    client = app.test_client()
    await sign_in(client, op)
    clock.advance(290)
    op.refresh_status, op.refresh_response = status, body
    response = await client.get("/request_tokens")
    assert response.status_code == 503
    assert (await response.get_json())["error"] == "identity_provider_unavailable"
    assert len(records(app)) == 1


async def test_concurrent_requests_share_one_refresh(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    import asyncio

    client = app.test_client()
    await sign_in(client, op)
    assert (await client.get("/request_tokens")).status_code == 200
    clock.advance(290)
    op.refresh_response = op.tokens(op.sign(op.claims(None)), refresh_token="rotated-once")
    answers = await asyncio.gather(*(client.get("/request_tokens") for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert len([r for r in op.sent("/token") if b"refresh_token" in r.content]) == 1


async def test_max_session_age_asks_for_and_checks_a_recent_sign_in(
    op: ControlledProvider, clock: Clock, fake: Quart
) -> None:
    application = make_sso_app(op, clock, fake, max_session_age=900)
    async with application.test_app():
        client = application.test_client()
        params = await start(client)
        assert params["max_age"] == "900"
        old = op.claims(params["nonce"], auth_time=int(clock()) - 3600)
        op.token_response = op.tokens(op.sign(old))
        assert (await callback(client, op, params)).status_code == 400
        params = await start(client)
        op.token_response = op.tokens(op.sign(op.claims(params["nonce"], auth_time=None)))
        assert (await callback(client, op, params)).status_code == 400


async def test_logout_goes_to_a_same_site_next(app: Quart) -> None:
    response = await app.test_client().post("/logout", form={"next": "/bye?x=1"}, headers=ORIGIN)
    assert response.status_code == 303 and response.headers["Location"] == "/bye?x=1"


async def test_secure_setup_binds_the_login_to_a_host_only_secure_cookie(
    op: ControlledProvider, clock: Clock, fake: Quart
) -> None:
    application = make_sso_app(op, clock, fake, sections={"session": {"cookie_secure": True}})
    async with application.test_app():
        client = application.test_client()
        response = await client.get("/login", scheme="https")
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("__Host-sbridge_login=")
        assert all(part in cookie for part in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax"))
        assert "Domain" not in cookie
        params = query_of(response.headers["Location"])
        op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
        done = await client.get(
            "/callback",
            query_string={"code": "c", "state": params["state"], "iss": op.issuer},
            scheme="https",
        )
        assert done.status_code == 303
        assert any(
            c.startswith("__Host-sentifyd_bridge=") for c in done.headers.getlist("Set-Cookie")
        )


async def test_a_group_removed_at_the_provider_is_gone_after_refresh(
    app: Quart, op: ControlledProvider, clock: Clock
) -> None:
    client = app.test_client()
    await sign_in(client, op)
    assert (await client.get("/request_tokens/premium")).status_code == 200
    clock.advance(290)
    op.refresh_response = op.tokens(op.sign(op.claims(None, groups=None)))
    assert (await client.get("/request_tokens/premium")).status_code == 403
    assert (await client.get("/request_tokens")).status_code == 200


# --- under a base path ------------------------------------------------------------------------


async def test_sso_lives_under_the_base_path(
    op: ControlledProvider, clock: Clock, fake: Quart
) -> None:
    application = make_sso_app(op, clock, fake, sections={"server": {"base_path": "/avatar"}})
    async with application.test_app():
        client = application.test_client()
        refused = await client.get("/avatar/request_tokens")
        assert (await refused.get_json())["login_url"] == "/avatar/login?next=%2Favatar%2F"
        started = await client.get("/avatar/login", query_string={"next": "/avatar/"})
        params = query_of(started.headers["Location"])
        assert params["redirect_uri"] == f"{PUBLIC_URL}/avatar/callback"
        op.token_response = op.tokens(op.sign(op.claims(params["nonce"])))
        done = await client.get(
            "/avatar/callback",
            query_string={"code": "c", "state": params["state"], "iss": op.issuer},
        )
        assert done.status_code == 303 and done.headers["Location"] == "/avatar/"
        body = await (await client.get("/avatar/session")).get_json()
        assert body["signed_in"] is True and body["logout"]["url"] == "/avatar/logout"
        page = (await (await client.get("/avatar/")).get_data()).decode()
        assert 'action="/avatar/logout"' in page
        assert (await client.get("/avatar/request_tokens")).status_code == 200


async def test_login_starts_are_rate_limited_per_ip(
    op: ControlledProvider, clock: Clock, fake: Quart
) -> None:
    application = make_sso_app(op, clock, fake, sections={"limits": {"login_per_ip": "3/minute"}})
    async with application.test_app():
        client = application.test_client()
        for _ in range(3):
            assert (await client.get("/login")).status_code == 302
        before = Bridge.of(application).store.snapshot()  # type: ignore[attr-defined]
        refused = await client.get("/login")
        assert refused.status_code == 429
        assert (await refused.get_json())["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        # No login state was stored for the refused start.
        assert Bridge.of(application).store.snapshot() == before  # type: ignore[attr-defined]
        clock.advance(61)
        assert (await client.get("/login")).status_code == 302


def test_importing_the_relying_party_leaves_the_warning_filters_alone() -> None:
    # A fresh interpreter: the import that silences authlib's httpx2 notice does so for itself.
    # (authlib.deprecate adds its own "always" filter when imported: the library's, not ours.)
    code = (
        "import warnings, authlib.deprecate\n"
        "warnings.simplefilter('error'); before = list(warnings.filters)\n"
        "import bridge.identity.oidc\n"
        "assert warnings.filters == before, 'the import changed the filters'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-500:]
