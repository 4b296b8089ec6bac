"""The visitor's "my devices" page: their sessions, this one marked, and signing devices out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from bridge.secret import Secret
from bridge.sessions.manager import SessionManager, decode_record
from bridge.web.csrf import csrf_token
from bridge.web.routes.account import session_ref
from support.app import bridge_of, login
from support.config import BRIDGE_KEY, make_settings

PAGE = "/account/sessions"
JSON = {"Accept": "application/json"}
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
WINDOWS_FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"


@dataclass
class Device:
    """One browser of a visitor: its own cookies, its user agent, its last handle."""

    client: Client
    agent: str
    handle: str = ""

    @property
    def cookie(self) -> str:
        jar = self.client.cookie_jar  # type: ignore[attr-defined]
        return next(c.value for c in jar if c.name == "sentifyd_bridge")

    @property
    def session_id(self) -> str:
        return SessionManager.session_id(self.cookie)

    async def tokens(self, path: str = "/request_tokens", *, refresh: bool = False) -> Any:
        query = {"refreshToken": self.handle} if refresh else None
        response = await self.client.get(
            path, query_string=query, headers={"User-Agent": self.agent}
        )
        if response.status_code == 200:
            self.handle = (await response.get_json())["tokens"]["refreshToken"]
        return response

    async def page(self) -> dict[str, Any]:
        response = await self.client.get(PAGE, headers={**JSON, **SAME_ORIGIN})
        assert response.status_code == 200, await response.get_data(as_text=True)
        body: dict[str, Any] = await response.get_json()
        return body

    async def post(self, path: str, **fields: str) -> Any:
        return await self.client.post(path, form=fields, headers={**JSON, **SAME_ORIGIN})


async def device(app: Quart, agent: str, user: str = "alice", **claims: Any) -> Device:
    """A browser signed in to the site whose avatar has started a session."""
    d = Device(app.test_client(), agent)
    login(d.client, app, user, **claims)
    assert (await d.tokens()).status_code == 200
    return d


async def three(app: Quart) -> tuple[Device, Device, Device]:
    customer = {"groups": ["customers"]}  # the premium avatar is for customers
    return (
        await device(app, MAC_CHROME, **customer),
        await device(app, IPHONE, **customer),
        await device(app, WINDOWS_FIREFOX, **customer),
    )


async def ended_reasons(app: Quart, user: str = "alice") -> list[str]:
    events = await bridge_of(app).lifecycle.recent(user, 50)
    return [e["reason"] for e in events if e["event"] == "session_ended"]


# --- the page ---------------------------------------------------------------------------------


async def test_page_lists_the_visitors_sessions_this_one_first_and_marked(app: Quart) -> None:
    mac, phone, windows = await three(app)
    await device(app, MAC_CHROME, "bob")  # someone else's session is not shown
    body = await phone.page()
    sessions = body["sessions"]
    assert [s["device"] for s in sessions][0] == "Safari on iPhone"
    assert sorted(s["device"] for s in sessions) == [
        "Chrome on macOS",
        "Firefox on Windows",
        "Safari on iPhone",
    ]
    assert [s["current"] for s in sessions] == [True, False, False]
    assert all(s["avatars"] == [{"name": "default", "title": "default"}] for s in sessions)
    now = bridge_of(app).clock()
    assert all(s["started_at"] == round(now) and s["last_used_at"] == round(now) for s in sessions)
    assert body["user"] == {"name": "alice"}


async def test_page_shows_the_avatars_each_session_used(app: Quart) -> None:
    mac = await device(app, MAC_CHROME, groups=["customers"])
    assert (await mac.tokens("/request_tokens/premium")).status_code == 200
    (listed,) = (await mac.page())["sessions"]
    assert [a["name"] for a in listed["avatars"]] == ["default", "premium"]


async def test_html_page_marks_this_device_and_offers_both_actions(app: Quart) -> None:
    mac, phone, windows = await three(app)
    response = await mac.client.get(PAGE)
    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    html = await response.get_data(as_text=True)
    assert "Chrome on macOS" in html and "This device" in html
    assert "Safari on iPhone" in html and "Firefox on Windows" in html
    assert 'action="/account/sessions/end-others"' in html
    assert html.count('action="/account/sessions/end"') == 3
    assert "Sign out all other devices" in html


async def test_page_names_sessions_by_reference_never_by_id_or_cookie(app: Quart) -> None:
    devices = await three(app)
    mac = devices[0]
    texts = [
        await (await mac.client.get(PAGE)).get_data(as_text=True),
        await (await mac.client.get(PAGE, headers={**JSON, **SAME_ORIGIN})).get_data(as_text=True),
    ]
    refs = [s["ref"] for s in (await mac.page())["sessions"]]
    assert len(set(refs)) == 3 and all(re.fullmatch(r"[0-9a-f]{24}", r) for r in refs)
    for d in devices:
        for text in texts:
            assert d.session_id not in text and d.session_id[:16] not in text
            assert d.cookie not in text and d.handle not in text


async def test_references_differ_per_viewer(app: Quart) -> None:
    mac, phone, _ = await three(app)
    seen_by_mac = {s["device"]: s["ref"] for s in (await mac.page())["sessions"]}
    seen_by_phone = {s["device"]: s["ref"] for s in (await phone.page())["sessions"]}
    assert seen_by_mac.keys() == seen_by_phone.keys()
    assert not set(seen_by_mac.values()) & set(seen_by_phone.values())


async def test_page_of_a_browser_without_a_session_lists_the_others(app: Quart) -> None:
    await three(app)
    fresh = Device(app.test_client(), MAC_CHROME)
    login(fresh.client, app)  # signed in to the site, no avatar opened in this browser yet
    sessions = (await fresh.page())["sessions"]
    assert len(sessions) == 3 and not any(s["current"] for s in sessions)


async def test_the_avatar_page_links_to_my_devices(app: Quart) -> None:
    client = app.test_client()
    login(client, app)
    html = await (await client.get("/")).get_data(as_text=True)
    assert '<a class="btn btn-ghost btn-sm" href="/account/sessions">My devices</a>' in html


async def test_under_a_base_path_the_page_and_its_forms_are_there_too(make_app: Any) -> None:
    settings = make_settings({"server": {"base_path": "/avatar"}})
    application = make_app(settings)
    async with application.test_app():
        mac = Device(application.test_client(), MAC_CHROME)
        login(mac.client, application)
        assert (await mac.tokens("/avatar/request_tokens")).status_code == 200
        html = await (await mac.client.get("/avatar/account/sessions")).get_data(as_text=True)
        assert 'action="/avatar/account/sessions/end"' in html  # this device's own line
        assert 'href="/avatar/"' in html  # back to the assistant
        answer = await mac.client.get("/avatar/account/sessions", headers=JSON)
        body = await answer.get_json()
        assert body["end_url"] == "/avatar/account/sessions/end"
        assert body["end_others_url"] == "/avatar/account/sessions/end-others"
        anonymous = await application.test_client().get("/avatar/account/sessions")
        assert anonymous.headers["Location"] == (
            "https://shop.example.com/login?next=/avatar/account/sessions"
        )


async def test_signed_out_visitor_is_sent_to_the_login(app: Quart) -> None:
    client = app.test_client()
    page = await client.get(PAGE)
    assert page.status_code == 302
    assert page.headers["Location"] == ("https://shop.example.com/login?next=/account/sessions")
    answer = await client.get(PAGE, headers={**JSON, **SAME_ORIGIN})
    assert answer.status_code == 401
    body = await answer.get_json()
    assert body["error"] == "login_required"
    assert body["login_url"] == "https://shop.example.com/login?next=/account/sessions"


async def test_signed_out_visitor_cannot_end_sessions(app: Quart) -> None:
    await three(app)
    client = app.test_client()
    answer = await client.post(f"{PAGE}/end-others", headers={**JSON, **SAME_ORIGIN})
    assert answer.status_code == 401 and (await answer.get_json())["error"] == "login_required"
    assert len(await bridge_of(app).sessions.sessions_of("alice")) == 3


async def test_page_json_from_another_origin_is_refused(app: Quart) -> None:
    mac = await device(app, MAC_CHROME)
    answer = await mac.client.get(PAGE, headers={**JSON, "Sec-Fetch-Site": "cross-site"})
    assert answer.status_code == 403
    assert (await answer.get_json())["error"] == "cross_site_request"


async def test_old_records_without_a_device_still_decode_and_show(app: Quart) -> None:
    mac = await device(app, MAC_CHROME)
    sessions = bridge_of(app).sessions
    key = sessions.record_key(mac.session_id)
    raw = await sessions.store.get_record(key)
    assert raw is not None and b'"device":"Chrome on macOS"' in raw
    old = raw.replace(b',"device":"Chrome on macOS"', b"")
    assert b"device" not in old
    record = decode_record(old)
    assert record is not None and record.device == ""
    assert await sessions.store.swap_record(key, raw, old, 60)
    (listed,) = (await mac.page())["sessions"]
    assert listed["device"] == "Unknown device" and listed["current"]


async def test_the_record_keeps_the_label_never_the_user_agent(app: Quart) -> None:
    mac = await device(app, MAC_CHROME)
    raw = await bridge_of(app).sessions.store.get_record(
        bridge_of(app).sessions.record_key(mac.session_id)
    )
    assert raw is not None
    assert b"Chrome on macOS" in raw
    assert b"Mozilla" not in raw and b"AppleWebKit" not in raw


# --- signing out --------------------------------------------------------------------------------


async def test_sign_out_all_other_devices(app: Quart) -> None:
    mac, phone, windows = await three(app)
    form = await mac.page()
    answer = await mac.post(form["end_others_url"], csrf_token=form["csrf_token"])
    assert answer.status_code == 200 and await answer.get_json() == {"ended": 2}

    for other in (phone, windows):
        refused = await other.tokens(refresh=True)
        assert refused.status_code == 401
        assert (await refused.get_json())["error"] == "invalid_refresh_token"
    assert (await mac.tokens(refresh=True)).status_code == 200  # this one keeps working
    assert [s["current"] for s in (await mac.page())["sessions"]] == [True]
    assert await ended_reasons(app) == ["user_signed_out_others"] * 2


async def test_sign_out_all_other_devices_by_form_redirects_back_with_a_notice(
    app: Quart,
) -> None:
    mac, _, _ = await three(app)
    token = (await mac.page())["csrf_token"]
    answer = await mac.client.post(
        f"{PAGE}/end-others", form={"csrf_token": token}, headers=SAME_ORIGIN
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/account/sessions?ended=2"
    html = await (await mac.client.get(answer.headers["Location"])).get_data(as_text=True)
    assert "Signed out 2 devices." in html
    assert "Safari on iPhone" not in html


async def test_sign_out_one_device(app: Quart) -> None:
    mac, phone, windows = await three(app)
    form = await mac.page()
    ref = next(s["ref"] for s in form["sessions"] if s["device"] == "Safari on iPhone")
    answer = await mac.post(form["end_url"], csrf_token=form["csrf_token"], session=ref)
    assert answer.status_code == 200 and await answer.get_json() == {"ended": 1}
    assert (await phone.tokens(refresh=True)).status_code == 401
    assert (await windows.tokens(refresh=True)).status_code == 200
    assert (await mac.tokens(refresh=True)).status_code == 200
    assert await ended_reasons(app) == ["user_signed_out_device"]


async def test_sign_out_this_device_clears_its_cookie(app: Quart) -> None:
    mac, phone, _ = await three(app)
    form = await mac.page()
    (ref,) = [s["ref"] for s in form["sessions"] if s["current"]]
    answer = await mac.post(form["end_url"], csrf_token=form["csrf_token"], session=ref)
    assert answer.status_code == 200
    cleared = [h for h in answer.headers.getlist("Set-Cookie") if "sentifyd_bridge=" in h]
    assert cleared and "Max-Age=0" in cleared[0]
    assert (await phone.tokens(refresh=True)).status_code == 200
    assert len(await bridge_of(app).sessions.sessions_of("alice")) == 2


# A token request in flight when the page signs its session out: tests/test_endings.py.


# --- refused, and nothing changes ----------------------------------------------------------------


async def assert_nothing_ended(app: Quart) -> None:
    assert len(await bridge_of(app).sessions.sessions_of("alice")) == 3
    assert await ended_reasons(app) == []


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "0" * 64,
        "not a token",
        "logout",  # the avatar page's sign-out token for this very session (made below)
    ],
)
async def test_end_others_without_the_pages_token_is_refused(app: Quart, token: str | None) -> None:
    mac, _, _ = await three(app)
    if token == "logout":
        token = csrf_token([Secret(BRIDGE_KEY)], mac.session_id)  # another form's token
    fields = {"csrf_token": token} if token is not None else {}
    answer = await mac.post(f"{PAGE}/end-others", **fields)
    assert answer.status_code == 403
    assert (await answer.get_json())["error"] == "invalid_csrf_token"
    await assert_nothing_ended(app)


async def test_another_browsers_token_is_refused(app: Quart) -> None:
    mac, phone, _ = await three(app)
    phones = (await phone.page())["csrf_token"]
    answer = await mac.post(f"{PAGE}/end-others", csrf_token=phones)
    assert answer.status_code == 403
    await assert_nothing_ended(app)


async def test_end_others_from_another_origin_is_refused(app: Quart) -> None:
    mac, _, _ = await three(app)
    token = (await mac.page())["csrf_token"]
    for site in ("cross-site", "same-site"):
        answer = await mac.client.post(
            f"{PAGE}/end-others",
            form={"csrf_token": token},
            headers={**JSON, "Sec-Fetch-Site": site},
        )
        assert answer.status_code == 403
        assert (await answer.get_json())["error"] == "cross_site_request"
    await assert_nothing_ended(app)


@pytest.mark.parametrize("ref", [None, "", "xyz", "A" * 24, "0" * 23, "0" * 25, "0" * 1000])
async def test_end_one_with_a_malformed_reference_is_a_bad_request(
    app: Quart, ref: str | None
) -> None:
    mac, _, _ = await three(app)
    form = await mac.page()
    fields = {"csrf_token": form["csrf_token"]}
    if ref is not None:
        fields["session"] = ref
    answer = await mac.post(form["end_url"], **fields)
    assert answer.status_code == 400
    assert (await answer.get_json())["error"] == "bad_request"
    await assert_nothing_ended(app)


async def test_end_one_with_an_unknown_reference_is_404(app: Quart) -> None:
    mac, phone, _ = await three(app)
    form = await mac.page()
    # The phone's page names the Mac's session differently: no good on the Mac's form.
    phones_ref = next(s["ref"] for s in (await phone.page())["sessions"] if not s["current"])
    for ref in ("0" * 24, phones_ref):
        answer = await mac.post(form["end_url"], csrf_token=form["csrf_token"], session=ref)
        assert answer.status_code == 404
        assert (await answer.get_json())["error"] == "unknown_session"
    await assert_nothing_ended(app)


async def test_another_users_session_cannot_be_ended(app: Quart) -> None:
    mac, _, _ = await three(app)
    bob = await device(app, MAC_CHROME, "bob")
    form = await mac.page()
    # Even a reference made for the Mac's own binding, if Bob's id leaked, names nothing of hers.
    forged = session_ref(Secret(BRIDGE_KEY), mac.session_id, bob.session_id)
    answer = await mac.post(form["end_url"], csrf_token=form["csrf_token"], session=forged)
    assert answer.status_code == 404
    assert (await bob.tokens(refresh=True)).status_code == 200
    await assert_nothing_ended(app)
