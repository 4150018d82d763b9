"""The duty officer's console over HTTP (no browser): one language a page, signing in and
coming back, roles, the live view, declaring, an incident's forms, people and rules.

The journeys in a real browser are in tests/test_console_browser.py.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest

from tests.test_pages import login
from tests.web_helpers import PASSWORD, Web

pytest_plugins = ["tests.web_fixtures"]


def field(html: str, name: str) -> str:
    """The value of the hidden (or first) input called ``name`` in a page."""
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} in the page"
    return match.group(1)


async def signed_in(web: Web, username: str = "duty-wang", role: str = "duty_officer") -> str:
    """Sign a user of ``role`` in (the client keeps the cookie); returns the page CSRF token."""
    await web.add_login_user(username, role)
    assert (await login(web, username, PASSWORD)).status == 303
    html = await (await web.client.get("/")).text()
    return field(html, "csrf")


# -- language -----------------------------------------------------------------------------------


async def test_chinese_by_default_english_by_the_browser_or_the_switch(web: Web) -> None:
    await signed_in(web)
    html = await (await web.client.get("/")).text()
    assert '<html lang="zh-CN">' in html and "进行中的事件" in html
    assert "Active incidents" not in html

    english = {"Accept-Language": "en-GB,en;q=0.9,zh-CN;q=0.5"}
    html = await (await web.client.get("/", headers=english)).text()
    assert '<html lang="en">' in html and "Active incidents" in html
    assert "进行中的事件" not in html and "值班台" not in html  # one language, not both
    chinese_first = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
    assert "进行中的事件" in await (await web.client.get("/", headers=chinese_first)).text()

    # The switch keeps the choice in a cookie and goes back to the page it was clicked on.
    resp = await web.client.get(
        "/lang/en?next=" + quote("/directory?x=1", safe=""), allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == "/directory?x=1"
    assert "responder_lang=en" in resp.headers["Set-Cookie"]
    html = await (await web.client.get("/", headers=chinese_first)).text()
    assert "Active incidents" in html and "进行中的事件" not in html  # the choice wins
    # Error pages speak it too.
    html = await (await web.client.get("/incidents/INC-20000101-0001")).text()
    assert "no incident INC-20000101-0001" in html and "找不到" not in html
    for elsewhere in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "x"):
        resp = await web.client.get(
            "/lang/zh?next=" + quote(elsewhere, safe=""), allow_redirects=False
        )
        assert resp.headers["Location"] == "/", elsewhere
    assert (await web.client.get("/lang/fr", allow_redirects=False)).status == 404


# -- signing in and roles ---------------------------------------------------------------------


async def test_an_anonymous_visitor_signs_in_and_comes_back(web: Web) -> None:
    incident = await web.declare()
    target = f"/incidents/{incident['id']}"
    resp = await web.client.get(target, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/login?next=" + quote(target, safe="/")
    html = await (await web.client.get(resp.headers["Location"])).text()
    assert field(html, "next") == target
    await web.add_login_user("duty-wang")
    resp = await web.client.post(
        "/login",
        data={
            "username": "duty-wang",
            "password": PASSWORD,
            "csrf": field(html, "csrf"),
            "next": target,
        },
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == target
    page = await web.client.get(target)
    assert page.status == 200 and incident["title"] in await page.text()


@pytest.mark.parametrize(
    "elsewhere", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"]
)
async def test_signing_in_never_sends_to_another_site(web: Web, elsewhere: str) -> None:
    await web.add_login_user("duty-wang")
    html = await (await web.client.get("/login?next=" + quote(elsewhere, safe=""))).text()
    assert 'name="next"' not in html
    resp = await web.client.post(
        "/login",
        data={
            "username": "duty-wang",
            "password": PASSWORD,
            "csrf": field(html, "csrf"),
            "next": elsewhere,
        },
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == "/"


async def test_a_viewer_sees_no_forms_and_cannot_post(web: Web, dump_tables: Any) -> None:
    incident = await web.declare()
    csrf = await signed_in(web, "viewer-li", "viewer")
    html = await (await web.client.get("/")).text()
    assert "/incidents/new" not in html
    html = await (await web.client.get(f"/incidents/{incident['id']}")).text()
    assert incident["title"] in html
    assert "<form" not in html.replace('<form method="post" action="/logout"', "")
    before = await dump_tables(web.db)
    for path, data in (
        ("/incidents/new", {"action": "confirm", "title": "x", "level": "II"}),
        (f"/incidents/{incident['id']}/release", {"published_at": "2026-11-26T08:30"}),
        (f"/incidents/{incident['id']}/close", {"reason": "x"}),
    ):
        resp = await web.client.post(path, data={**data, "csrf": csrf}, allow_redirects=False)
        text = await resp.text()
        assert resp.status == 403, (path, text)
        assert "您的角色只能查看" in text
    assert (await web.client.get("/incidents/new")).status == 403
    assert await dump_tables(web.db) == before


# -- the live view ------------------------------------------------------------------------------


async def test_the_live_view_gives_the_server_clock_and_each_duty(web: Web) -> None:
    assert (await web.client.get("/live.json")).status == 401  # JSON, not a sign-in page
    incident = await web.declare(occurred_at=web.at(minutes=-250))  # 50 min to the release
    await signed_in(web)
    html = await (await web.client.get("/")).text()
    assert 'class="duty state-soon"' in html and "0:50" in html and "剩余 50分钟 · 即将到期" in html
    assert "2026-11-26 09:50 +08:00" in html  # the absolute deadline, for a page without script
    data = await (await web.client.get("/live.json")).json()
    assert data["now_ms"] == int(web.clock.now().timestamp() * 1000)
    release = next(d for d in data["duties"] if d["clock"] == "0:50")
    assert release["state"] == "soon" and release["live"] is True
    web.clock.advance(3600)
    data = await (await web.client.get(f"/live.json?incident={incident['id']}")).json()
    release = next(d for d in data["duties"] if d["id"] == release["id"])
    assert release["state"] == "overdue" and release["clock"] == "+0:10"
    assert release["words"] == "已超时 10分钟"
