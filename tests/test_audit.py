"""Named admin tokens and the audit trail: who did what, through the API and the CLI."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from bridge.cli import main
from bridge.errors import ConfigError
from bridge.secret import Secret
from bridge.settings.schema import OperatorToken
from bridge.store.memory import MemoryStore
from bridge.web.bearer import operator_named_by
from support import leaks as support_leaks
from support.app import bridge_of, login
from support.config import make_settings, serve_config, write_bridge_toml
from support.ops import ADMIN_TOKEN, admin_headers

ALICE = "alice-operator-token-0123456789abcdefghijkl"
BOB = "bob-operator-token-0123456789abcdefghijklmno"
CAROL = "carol-operator-token-0123456789abcdefghijklm"  # only in the tokens file, as a hash
for _token in (ALICE, BOB, CAROL):
    support_leaks.always(_token)

NAMED = {"BRIDGE_ADMIN_TOKENS": f"alice:{ALICE}, bob:{BOB}"}


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
async def named_app(make_app: Any) -> AsyncIterator[Quart]:
    application = make_app(make_settings(env={**NAMED, "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}))
    async with application.test_app():
        yield application


async def visit(app: Quart, user: str = "visitor") -> Any:
    client = app.test_client()
    login(client, app, user)
    response = await client.get("/request_tokens")
    assert response.status_code == 200
    return client


async def audit_of(app: Quart) -> list[dict[str, Any]]:
    store = bridge_of(app).store
    return await store.list_range(store.key("audit"), 1000)


# --- named tokens ---------------------------------------------------------------------------


def test_named_tokens_are_held_as_hashes_only() -> None:
    settings = make_settings(env=NAMED)
    assert [(t.name, t.digest) for t in settings.admin_tokens] == [
        ("alice", sha256(ALICE)),
        ("bob", sha256(BOB)),
    ]
    assert ALICE not in repr(settings) and ALICE not in repr(settings.admin_tokens)


def test_the_single_token_is_the_operator_named_admin() -> None:
    settings = make_settings(env={"BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN, **NAMED})
    assert [t.name for t in settings.admin_tokens] == ["admin", "alice", "bob"]


def test_a_tokens_file_holds_names_and_hashes(tmp_path: Path) -> None:
    path = tmp_path / "admins"
    path.write_text(f"# operators\ncarol {sha256(CAROL)}\n\ndave\t{sha256('d' * 40).upper()}\n")
    settings = make_settings(env={"BRIDGE_ADMIN_TOKENS_FILE": str(path), **NAMED})
    assert [t.name for t in settings.admin_tokens] == ["alice", "bob", "carol", "dave"]
    assert operator_named_by(CAROL, settings.admin_tokens) == "carol"
    assert operator_named_by("d" * 40, settings.admin_tokens) == "dave"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"BRIDGE_ADMIN_TOKENS": f"alice{ALICE}"}, "BRIDGE_ADMIN_TOKENS (entry 1): must be name:"),
        ({"BRIDGE_ADMIN_TOKENS": "alice:short"}, "BRIDGE_ADMIN_TOKENS (entry 1): must be at least"),
        ({"BRIDGE_ADMIN_TOKENS": f"al ice:{ALICE}"}, "(entry 1): must be name:token"),
        ({"BRIDGE_ADMIN_TOKENS": "alice:"}, "(entry 1): must be name:token"),
        ({"BRIDGE_ADMIN_TOKENS": f"alice:{ALICE},alice:{BOB}"}, "'alice' is named twice"),
        ({"BRIDGE_ADMIN_TOKENS": f"alice:{ALICE},bob:{ALICE}"}, "the same token is given twice"),
        ({"BRIDGE_ADMIN_TOKENS": f"admin:{ALICE}", "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}, "'admin'"),
    ],
)
def test_bad_token_lists_are_refused_without_quoting_a_token(
    env: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        make_settings(env=env)
    assert says in str(caught.value)
    for token in (ALICE, BOB, ADMIN_TOKEN, "short"):
        assert token not in str(caught.value)


@pytest.mark.parametrize(
    "line", ["carol", f"carol {sha256(CAROL)[:-1]}", f"carol {CAROL}", f"ca/rol {sha256(CAROL)}"]
)
def test_bad_token_file_lines_are_refused_by_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "admins"
    path.write_text(f"bob {sha256(BOB)}\n{line}\n")
    with pytest.raises(ConfigError, match=r"BRIDGE_ADMIN_TOKENS_FILE \(.*, line 2\)") as caught:
        make_settings(env={"BRIDGE_ADMIN_TOKENS_FILE": str(path)})
    assert CAROL not in str(caught.value)


def test_a_missing_tokens_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BRIDGE_ADMIN_TOKENS_FILE: cannot read"):
        make_settings(env={"BRIDGE_ADMIN_TOKENS_FILE": str(tmp_path / "nope")})


def test_a_token_names_its_operator_and_nothing_else_does() -> None:
    tokens = (OperatorToken.of("alice", Secret(ALICE)), OperatorToken.of("bob", Secret(BOB)))
    assert operator_named_by(BOB, tokens) == "bob"
    assert operator_named_by(ALICE, tokens) == "alice"
    for wrong in ("", ALICE[:-1], ALICE + "x", sha256(ALICE), ALICE.upper()):
        assert operator_named_by(wrong, tokens) is None


async def test_each_operator_acts_under_their_own_name(named_app: Quart) -> None:
    await visit(named_app)
    for token, name in ((ALICE, "alice"), (BOB, "bob"), (ADMIN_TOKEN, "admin")):
        client = named_app.test_client()
        response = await client.get("/admin/users/visitor", headers=admin_headers(token))
        assert response.status_code == 200
        assert (await audit_of(named_app))[0]["actor"] == name


async def test_the_metrics_token_is_not_an_admin_token(make_app: Any) -> None:
    metrics = "metrics-token-for-audit-tests-0123456789ab"
    support_leaks.always(metrics)
    application = make_app(make_settings(env={**NAMED, "BRIDGE_METRICS_TOKEN": metrics}))
    async with application.test_app():
        response = await application.test_client().get(
            "/admin/users/visitor", headers=admin_headers(metrics)
        )
        assert response.status_code == 401


# --- the audit trail through the API -------------------------------------------------------


async def test_every_admin_call_is_recorded_with_actor_target_and_outcome(
    named_app: Quart,
) -> None:
    await visit(named_app)
    [record] = await bridge_of(named_app).sessions.sessions_of("visitor")
    headers = admin_headers(ALICE)
    calls = [
        ("GET", "/admin/users/visitor", "show_user", "ok", "visitor", None),
        ("GET", "/admin/sessions?user=visitor", "list_sessions", "ok", "visitor", None),
        ("DELETE", f"/admin/sessions/{record.id}", "revoke_session", "ok", "visitor", record.id),
        ("DELETE", f"/admin/sessions/{record.id}", "revoke_session", "not_found", None, record.id),
        ("DELETE", "/admin/users/visitor/sessions?block=60", "revoke_user", "ok", "visitor", None),
        ("DELETE", "/admin/users/visitor/block", "unblock_user", "ok", "visitor", None),
        ("GET", "/admin/audit?limit=1", "read_audit", "ok", None, None),
    ]
    for method, path, action, outcome, user, session in calls:
        before = bridge_of(named_app).clock()
        await named_app.test_client().open(path, method=method, headers=headers)
        entry = (await audit_of(named_app))[0]
        assert entry["actor"] == "alice" and entry["via"] == "admin_api"
        assert entry["action"] == action and entry["outcome"] == outcome
        assert entry.get("user") == user and entry.get("session") == session
        assert entry["time"] == round(before, 3)
    assert len(await audit_of(named_app)) == len(calls)


async def test_a_revoke_all_records_what_it_ended_and_the_block(named_app: Quart) -> None:
    await visit(named_app)
    await visit(named_app)
    await named_app.test_client().delete(
        "/admin/users/visitor/sessions?block=120", headers=admin_headers(BOB)
    )
    entry = (await audit_of(named_app))[0]
    assert (entry["actor"], entry["action"], entry["ended"], entry["block"]) == (
        "bob",
        "revoke_user",
        2,
        120,
    )
    assert entry["blocked_until"] == round(bridge_of(named_app).clock() + 120, 3)


async def test_revocation_events_name_the_operator(named_app: Quart) -> None:
    await visit(named_app)
    await named_app.test_client().delete(
        "/admin/users/visitor/sessions?block=0", headers=admin_headers(BOB)
    )
    [ended] = [
        e
        for e in await bridge_of(named_app).lifecycle.recent("visitor", 10)
        if e["event"] == "session_ended"
    ]
    assert (ended["reason"], ended["by"], ended["actor"]) == ("admin_revoked", "admin_api", "bob")


async def test_refused_calls_and_bad_input_record_nothing(named_app: Quart) -> None:
    await visit(named_app)
    for path, headers in (
        ("/admin/users/visitor", admin_headers("x" * 40)),
        ("/admin/users/visitor", {}),
        ("/admin/sessions?limit=0", admin_headers(ALICE)),
        ("/admin/audit?limit=0", admin_headers(ALICE)),
        ("/admin/audit?user=" + "u" * 300, admin_headers(ALICE)),
    ):
        response = await named_app.test_client().get(path, headers=headers)
        assert response.status_code in (400, 401)
        assert (await response.get_json())["error"] in ("bad_request", "unauthorized")
    assert await audit_of(named_app) == []


async def test_audit_lists_newest_first_and_filters(named_app: Quart) -> None:
    await visit(named_app, "visitor")
    await visit(named_app, "other")
    client = named_app.test_client()
    await client.get("/admin/users/visitor", headers=admin_headers(ALICE))
    await client.get("/admin/users/other", headers=admin_headers(BOB))
    await client.delete("/admin/users/other/block", headers=admin_headers(ALICE))
    body = await (await client.get("/admin/audit", headers=admin_headers(BOB))).get_json()
    assert [(e["actor"], e["action"]) for e in body["entries"]] == [
        ("alice", "unblock_user"),
        ("bob", "show_user"),
        ("alice", "show_user"),
    ]
    by_user = await (
        await client.get("/admin/audit?user=other", headers=admin_headers(BOB))
    ).get_json()
    assert [e["action"] for e in by_user["entries"]] == ["unblock_user", "show_user"]
    by_actor = await (
        await client.get("/admin/audit?actor=alice&limit=1", headers=admin_headers(BOB))
    ).get_json()
    assert [e["action"] for e in by_actor["entries"]] == ["unblock_user"]


async def test_the_audit_is_capped_and_expires_like_the_events(make_app: Any) -> None:
    settings = make_settings({"admin": {"audit_max_entries": 3, "audit_retention": 600}}, env=NAMED)
    application = make_app(settings)
    async with application.test_app():
        for n in range(5):
            await application.test_client().get(f"/admin/users/u{n}", headers=admin_headers(ALICE))
        assert [e["user"] for e in await audit_of(application)] == ["u4", "u3", "u2"]
        store = bridge_of(application).store
        assert isinstance(store, MemoryStore)
        expiry = store.expiry(store.key("audit"))
        assert expiry is not None and 0 < expiry - time.monotonic() <= 600


async def test_audit_entries_hold_no_secret(named_app: Quart, fake_state: Any) -> None:
    client = await visit(named_app)
    [record] = await bridge_of(named_app).sessions.sessions_of("visitor")
    await named_app.test_client().delete(
        f"/admin/sessions/{record.id}", headers=admin_headers(ALICE)
    )
    text = json.dumps(await audit_of(named_app))
    cookies = [c.value for c in client.cookie_jar]
    for secret in [ALICE, sha256(ALICE), *cookies, *fake_state.issued_refresh_tokens]:
        assert secret not in text


# --- the CLI --------------------------------------------------------------------------------


async def test_cli_actions_are_audited_under_the_actor_and_audit_lists_them(
    named_app: Quart, capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support.config import TEST_ENV

    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    config = write_bridge_toml(tmp_path / "bridge.toml", **serve_config(store={"url": "memory://"}))
    await visit(named_app)
    store = bridge_of(named_app).store
    argv = ["--config", str(config)]
    assert (
        await _cli(
            ["sessions", "revoke", "visitor", "--block", "0", "--actor", "erin", *argv], store
        )
        == 0
    )
    monkeypatch.setenv("BRIDGE_OPERATOR", "frank")
    assert await _cli(["events", "visitor", *argv], store) == 0
    capsys.readouterr()
    assert await _cli(["audit", "--user", "visitor", *argv], store) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["actor"], e["via"], e["action"]) for e in entries] == [
        ("frank", "cli", "read_events"),
        ("erin", "cli", "revoke_user"),
    ]
    ended = [e for e in await bridge_of(named_app).lifecycle.recent("visitor", 10)
             if e["event"] == "session_ended"]  # fmt: skip
    assert ended[0]["actor"] == "erin" and ended[0]["by"] == "cli"
    assert await _cli(["audit", "--limit", "0", *argv], store) == 2


async def _cli(argv: list[str], store: Any) -> int:
    import asyncio

    # The CLI runs its own event loop: give it a thread, as a separate process would have.
    return await asyncio.to_thread(main, argv, store=store)
