"""bridge/identity/jose.py: every algorithm the settings accept verifies, with a key of its own
type and curve only, through the app, against a JWKS served over HTTP on 127.0.0.1."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import test_jwt_login
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey
from quart import Quart
from test_jwt_login import AUDIENCE, ISSUER, JWKSServer, settings_for

from bridge.identity import jose
from support.app import Clock

jwks = test_jwt_login.jwks  # the provider's JWKS endpoint on 127.0.0.1 (a fixture)

# The key each algorithm is signed with, by kid; the keys carry no "alg" of their own, so only
# the table decides which one verifies which algorithm.
KID_OF = {
    "RS256": "rsa", "RS384": "rsa", "RS512": "rsa", "PS256": "rsa", "PS384": "rsa",
    "PS512": "rsa", "ES256": "p-256", "ES384": "p-384", "ES512": "p-521", "EdDSA": "ed25519",
    "Ed25519": "ed25519",
}  # fmt: skip


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {
        "rsa": RSAKey.generate_key(2048, parameters={"kid": "rsa"}),
        "p-256": ECKey.generate_key("P-256", parameters={"kid": "p-256"}),
        "p-384": ECKey.generate_key("P-384", parameters={"kid": "p-384"}),
        "p-521": ECKey.generate_key("P-521", parameters={"kid": "p-521"}),
        "ed25519": OKPKey.generate_key("Ed25519", parameters={"kid": "ed25519"}),
        "ed448": OKPKey.generate_key("Ed448", parameters={"kid": "ed448"}),
    }


def sign(key: Any, alg: str, clock: Clock, kid: str | None = None) -> str:
    now = int(clock())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-7", "iat": now, "exp": now + 300}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc: "EdDSA" is deprecated
        return jwt.encode({"alg": alg, "kid": kid or key.kid}, claims, key, algorithms=[alg])


def test_every_algorithm_the_settings_accept_has_a_key_type() -> None:
    assert set(jose.SETTINGS_ALGORITHMS) <= set(jose.KEY_TYPES)
    assert set(jose.SETTINGS_ALGORITHMS) <= set(KID_OF)  # and is tested end to end below
    assert set(jose.OIDC_ALGORITHMS) == set(jose.KEY_TYPES)
    assert not {"none", "HS256", "HS384", "HS512"} & set(jose.KEY_TYPES)


async def answer(make_app: Callable[..., Quart], server: JWKSServer, token: str) -> int:
    app = make_app(settings_for(server, algorithms=list(jose.SETTINGS_ALGORITHMS)))
    async with app.test_app():
        client = app.test_client()
        client.set_cookie("localhost", "id_token", token)
        response = await client.get("/request_tokens")
        if response.status_code == 401:
            assert (await response.get_json())["error"] == "login_required"
        return response.status_code


@pytest.mark.parametrize("alg", jose.SETTINGS_ALGORITHMS)
async def test_a_token_of_each_accepted_algorithm_is_a_login(
    make_app: Callable[..., Quart], jwks: JWKSServer, keys: dict[str, Any], clock: Clock, alg: str
) -> None:
    jwks.keys = [key.as_dict(private=False) for key in keys.values()]
    assert await answer(make_app, jwks, sign(keys[KID_OF[alg]], alg, clock)) == 200


@pytest.mark.parametrize("alg", jose.SETTINGS_ALGORITHMS)
async def test_a_key_of_another_type_is_refused(
    make_app: Callable[..., Quart], jwks: JWKSServer, keys: dict[str, Any], clock: Clock, alg: str
) -> None:
    # The token claims ``alg`` and names a published key of another type or curve.
    jwks.keys = [key.as_dict(private=False) for key in keys.values()]
    other = "p-384" if KID_OF[alg] != "p-384" else "rsa"
    own = keys[KID_OF[alg]]
    assert await answer(make_app, jwks, sign(own, alg, clock, kid=other)) == 401


async def test_eddsa_is_ed25519_only(
    make_app: Callable[..., Quart], jwks: JWKSServer, keys: dict[str, Any], clock: Clock
) -> None:
    # joserfc's "EdDSA" verifies Ed448 too; the settings promise Ed25519 (RFC 8037's OKP).
    jwks.keys = [keys["ed448"].as_dict(private=False)]
    assert await answer(make_app, jwks, sign(keys["ed448"], "EdDSA", clock)) == 401


@pytest.mark.parametrize(("alg", "kid"), [("ES256", "p-384"), ("ES512", "p-256")])
async def test_an_ec_key_of_another_curve_is_refused(
    make_app: Callable[..., Quart],
    jwks: JWKSServer,
    keys: dict[str, Any],
    clock: Clock,
    alg: str,
    kid: str,
) -> None:
    # Only the other curve's key is published, so no kid lookup can save the check.
    jwks.keys = [keys[kid].as_dict(private=False)]
    assert await answer(make_app, jwks, sign(keys[KID_OF[alg]], alg, clock, kid=kid)) == 401
