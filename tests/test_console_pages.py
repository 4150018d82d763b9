"""The duty officer's console over HTTP (no browser): one language a page, signing in and
coming back, roles, the live view, declaring, an incident's forms, people and rules.

The journeys in a real browser are in tests/test_console_browser.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from typing import Any
from urllib.parse import quote

import pytest
from markupsafe import escape

from responder.web.security import SESSION_SECONDS
from tests.test_pages import login, sent_notifications, token_of
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


# -- declaring ------------------------------------------------------------------------------------


def declaration_form(web: Web, **fields: str) -> dict[str, str]:
    """The declare form as a browser posts it (times from the pickers, local, to the minute)."""
    occurred = (web.clock.now() - timedelta(hours=1)).astimezone(web.cfg.tz)
    form = {
        "title": "江城化工园区储罐爆炸",
        "category": "accident",
        "level": "II",
        "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M"),
        "learned_at": "",
        "lead_unit": "emergency",
        "location": "江城区化工园区",
        "summary": "",
    }
    form.update(fields)
    return form


async def open_declare_form(web: Web) -> tuple[str, str]:
    html = await (await web.client.get("/incidents/new")).text()
    return field(html, "csrf"), field(html, "key")


async def test_declare_through_the_preview_once_however_often_confirmed(web: Web) -> None:
    await signed_in(web)
    csrf, key = await open_declare_form(web)
    form = {**declaration_form(web), "csrf": csrf, "key": key}
    resp = await web.client.post("/incidents/new", data={**form, "action": "preview"})
    html = await resp.text()
    assert resp.status == 200, html
    assert await web.count("incidents") == 0  # a preview declares nothing
    # The deadlines, and each step with the people it reaches (by name and unit).
    assert "2026-11-26 13:00 +08:00" in html and "2026-11-27 08:00 +08:00" in html
    assert "王芳(区应急管理局)" in html and "李强(区应急管理局)" in html
    assert "陈静(区政府办公室)" in html  # duty_officer@#office
    assert "时限前2小时提醒" in html and "此后每30分钟重复" in html
    assert "申报后立即" in html  # the notice on declaring
    assert "head@lead" not in html
    assert field(html, "key") == key  # the confirmation carries the same key
    # A double click: two confirmations with the same key declare one incident.
    first = await web.client.post(
        "/incidents/new", data={**form, "action": "confirm"}, allow_redirects=False
    )
    second = await web.client.post(
        "/incidents/new", data={**form, "action": "confirm"}, allow_redirects=False
    )
    assert first.status == second.status == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert await web.count("incidents") == 1
    page = await web.client.get(first.headers["Location"])
    html = await page.text()
    assert "江城化工园区储罐爆炸" in html and "发布权威信息" in html and "剩余 4小时" in html
    # The same form changed and confirmed again is not quietly a second declaration.
    resp = await web.client.post(
        "/incidents/new", data={**form, "title": "另一起事件", "action": "confirm"}
    )
    assert resp.status == 422 and "此表单已用于申报另一起事件" in await resp.text()
    assert await web.count("incidents") == 1


async def test_a_late_declaration_shows_what_is_overdue_at_once(web: Web) -> None:
    await signed_in(web)
    csrf, key = await open_declare_form(web)
    six_hours_ago = (web.clock.now() - timedelta(hours=6)).astimezone(web.cfg.tz)
    form = {
        **declaration_form(web, occurred_at=six_hours_ago.strftime("%Y-%m-%dT%H:%M")),
        "csrf": csrf,
        "key": key,
    }
    html = await (
        await web.client.post("/incidents/new", data={**form, "action": "preview"})
    ).text()
    assert "发生时间已过时限" in html and "已超时" in html
    assert "到期:超时告警" in html
    resp = await web.client.post("/incidents/new", data={**form, "action": "confirm"})
    html = await resp.text()
    assert resp.status == 200 and "已超时 1小时" in html and "state-overdue" in html


async def test_a_refused_declaration_keeps_what_was_typed(web: Web) -> None:
    await signed_in(web)
    csrf, key = await open_declare_form(web)
    tomorrow = (web.clock.now() + timedelta(days=1)).astimezone(web.cfg.tz)
    form = {
        **declaration_form(
            web, category="", occurred_at=tomorrow.strftime("%Y-%m-%dT%H:%M"), title="<b>爆炸</b>"
        ),
        "csrf": csrf,
        "key": key,
        "action": "preview",
    }
    resp = await web.client.post("/incidents/new", data=form)
    html = await resp.text()
    assert resp.status == 422, html
    # The error right after its field, linked to it; the typed text kept (escaped).
    assert re.search(r'id="category"[^>]*aria-invalid="true"', html)
    assert '<p class="field-error" id="category-error">请填写此项</p>' in html
    assert 'value="&lt;b&gt;爆炸&lt;/b&gt;"' in html
    assert 'value="江城区化工园区"' in html
    # Fixed, the same form goes on; the time in the future is then refused by the operation.
    resp = await web.client.post("/incidents/new", data={**form, "category": "accident"})
    html = await resp.text()
    assert resp.status == 422, html
    assert '<p class="field-error" id="occurred_at-error">不能晚于当前时间' in html
    assert "occurred_at" not in html.split('id="occurred_at-error">')[1].split("</p>")[0]
    for bad in ("yesterday", "2026-13-40T25:00", "2026-11-26T08:00+08:00"):
        resp = await web.client.post("/incidents/new", data={**form, "occurred_at": bad})
        assert resp.status == 422 and "请按“年-月-日 时:分”填写" in await resp.text(), bad
    assert await web.count("incidents") == 0


# -- the incident's forms -------------------------------------------------------------------------


async def incident_form(web: Web, incident_id: str) -> tuple[str, str]:
    html = await (await web.client.get(f"/incidents/{incident_id}")).text()
    return field(html, "csrf"), field(html, "key")


def picker(web: Web, **delta: float) -> str:
    return (web.clock.now() + timedelta(**delta)).astimezone(web.cfg.tz).strftime("%Y-%m-%dT%H:%M")


async def test_record_the_release_with_its_checklist_once(web: Web) -> None:
    incident = await web.declare()
    await signed_in(web)
    csrf, key = await incident_form(web, incident["id"])
    form = {
        "csrf": csrf,
        "key": key,
        "published_at": picker(web, minutes=-5),
        "url": "https://www.example.gov.cn/1",
        "check_time_place": "on",
        "check_what_happened": "on",
        "check_measures": "on",
    }
    url = f"/incidents/{incident['id']}/release"
    first = await web.client.post(url, data=form, allow_redirects=False)
    again = await web.client.post(url, data=form, allow_redirects=False)
    assert first.status == again.status == 303
    assert await web.count("releases") == 1  # the double click recorded once
    html = await (await web.client.get(first.headers["Location"])).text()
    assert "已记录权威信息发布。" in html
    assert "已于 2026-11-26 08:55 +08:00 按时完成" in html
    assert "内容未涵盖:伤亡和损失、公众提示、下次发布安排、联系方式" in html
    assert "举行新闻发布会" in html and "剩余 23小时" in html  # the other clock still runs
    assert "记录权威信息发布(发布于 2026-11-26 08:55:00)" in html  # the timeline, to the second
    assert 'action="/incidents/' + incident["id"] + '/follow-up"' in html
    # The next release is a follow-up: it meets the follow-up duty the first one started.
    web.clock.advance(3600)
    follow_key = re.search(r'name="key" value="([^"]+-follow_up)"', html)
    assert follow_key, html
    resp = await web.client.post(
        f"/incidents/{incident['id']}/follow-up",
        data={"csrf": csrf, "key": follow_key.group(1), "published_at": picker(web, minutes=-1)},
    )
    html = await resp.text()
    assert resp.status == 200 and "已记录持续发布。" in html
    assert "持续发布:2026-11-26 09:59 +08:00" in html and await web.count("releases") == 2


async def test_a_release_after_the_deadline_says_it_is_late(web: Web) -> None:
    incident = await web.declare(occurred_at=web.at(hours=-6))
    await signed_in(web)
    csrf, key = await incident_form(web, incident["id"])
    resp = await web.client.post(
        f"/incidents/{incident['id']}/release",
        data={"csrf": csrf, "key": key, "published_at": picker(web, minutes=-1)},
    )
    html = await resp.text()
    assert resp.status == 200, html
    assert "超时完成:2026-11-26 08:59 +08:00 完成,超出时限 59分钟" in html
    assert "超时记录保留" in html


async def test_a_refused_form_shows_its_error_by_the_field_and_keeps_the_text(
    web: Web, dump_tables: Any
) -> None:
    incident = await web.declare()
    await signed_in(web)
    csrf, key = await incident_form(web, incident["id"])
    before = await dump_tables(web.db)
    resp = await web.client.post(
        f"/incidents/{incident['id']}/release",
        data={
            "csrf": csrf,
            "key": key,
            "published_at": picker(web, hours=2),
            "url": "javascript:alert(1)",
            "check_contact": "on",
        },
    )
    html = await resp.text()
    assert resp.status == 422, html
    assert 'id="release-url-error">须为以 http:// 或 https:// 开头的网址' in html
    assert 'value="javascript:alert(1)"' in html
    assert re.search(r'id="release-check_contact"[^>]*checked', html)
    resp = await web.client.post(
        f"/incidents/{incident['id']}/release",
        data={"csrf": csrf, "key": key, "published_at": picker(web, hours=2)},
    )
    html = await resp.text()
    assert resp.status == 422 and 'id="release-published_at-error">不能晚于当前时间' in html
    # The level form without a reason, and without a CSRF token.
    resp = await web.client.post(
        f"/incidents/{incident['id']}/level", data={"csrf": csrf, "key": key, "level": "I"}
    )
    html = await resp.text()
    assert resp.status == 422 and 'id="level-reason-error">请填写此项' in html
    resp = await web.client.post(
        f"/incidents/{incident['id']}/close", data={"key": key, "reason": "x"}
    )
    assert resp.status == 403 and "此页面已过期" in await resp.text()
    assert await dump_tables(web.db) == before


async def test_press_conference_level_and_close_from_the_page(web: Web) -> None:
    incident = await web.declare()
    iid = incident["id"]
    await signed_in(web)

    async def post(path: str, **data: str) -> str:
        csrf, key = await incident_form(web, iid)
        resp = await web.client.post(
            f"/incidents/{iid}/{path}", data={"csrf": csrf, "key": key, **data}
        )
        html = await resp.text()
        assert resp.status == 200, html
        return html

    html = await post("press-conference", scheduled_at=picker(web, hours=3), venue="区政府")
    assert "已安排新闻发布会。" in html and "定于 2026-11-26 12:00 +08:00" in html
    pc = re.search(r"/press-conference/(\d+)/reschedule", html)
    assert pc, html
    html = await post(
        f"press-conference/{pc.group(1)}/reschedule",
        scheduled_at=picker(web, hours=4),
        reason="领导行程",
    )
    assert "新闻发布会已改期。" in html and "新闻发布会改期至 2026-11-26 13:00:00" in html
    web.clock.advance(4 * 3600)
    html = await post(
        "press-conference/held",
        press_conference_id=pc.group(1),
        held_at=picker(web),
        principal_leader_spoke="on",
    )
    assert "已记录新闻发布会举行。" in html and "已于 2026-11-26 13:00 +08:00 按时完成" in html
    html = await post("level", level="I", reason="伤亡人数上升")
    assert "事件级别已调整。" in html and "I级(特别重大)" in html
    html = await post("close", reason="处置完毕")
    assert "事件已结束。" in html and "处置完毕" in html
    assert "<details" not in html  # a closed incident has no forms


# -- people, units and rules ----------------------------------------------------------------------


async def test_who_gets_called_at_the_deadline_without_opening_the_toml(web: Web) -> None:
    await signed_in(web, "viewer-li", "viewer")
    resp = await web.client.get("/directory")
    html = await resp.text()
    assert resp.status == 200, html
    assert "区应急管理局" in html and "王芳" in html
    assert "+86138****0001" in html and "+8613800000001" not in html  # masked
    assert "wa****@example.gov.cn" in html
    assert "语音电话 → 短信" in html  # 周华's failover order
    # The deadline step of the national rule, in words, with the people it reaches.
    assert "到期时(超时告警)" in html and "牵头单位的负责人" in html
    assert "值班员(区政府办公室 陈静)" in html and "分管领导(区政府办公室 周华)" in html
    assert "此后每30分钟重复,直到完成" in html and "所有渠道同时发送" in html
    assert "现行" in html and "head@lead" not in html
    assert "<form" not in html.replace('<form method="post" action="/logout"', "")
    english = await (await web.client.get("/directory", headers={"Accept-Language": "en"})).text()
    assert "head of the lead unit" in english and "负责人" not in english


async def test_each_form_on_a_page_records_once_and_never_mixes_with_another(web: Web) -> None:
    """One page shows several forms: each carries its own key.  Sent twice (a double click)
    a form records once; the page kept open and a form sent again with other values is
    refused in plain words, not as a second change."""
    incident = await web.declare()
    iid = incident["id"]
    await signed_in(web)
    html = await (await web.client.get(f"/incidents/{iid}")).text()
    keys = re.findall(r'name="key" value="([^"]+)"', html)
    assert len(keys) == len(set(keys)) >= 4
    csrf = field(html, "csrf")
    level_key = next(k for k in keys if k.endswith("-level"))
    form = {"csrf": csrf, "key": level_key, "level": "I", "reason": "伤亡上升"}
    for _ in range(2):
        resp = await web.client.post(f"/incidents/{iid}/level", data=form, allow_redirects=False)
        assert resp.status == 303
    assert await web.count("level_changes") == 1
    resp = await web.client.post(f"/incidents/{iid}/level", data={**form, "level": "III"})
    text = await resp.text()
    assert resp.status == 422 and "此表单已经提交过;请刷新页面后重新填写" in text
    assert await web.count("level_changes") == 1
    assert (await web.client.get("/incidents/" + "X" * 65)).status == 404


# -- the other pages a duty officer meets ---------------------------------------------------------


@pytest.mark.parametrize("run_engine", [True])
async def test_the_ack_page_of_an_overdue_duty_says_so_and_the_inbox_links_work(web: Web) -> None:
    rows = await sent_notifications(web)
    kinds = dict(await web.db.fetchall("SELECT id, kind FROM obligations"))
    release = next(r for r in rows if kinds.get(r["obligation_id"]) == "authoritative_release")
    html = await (await web.client.get(f"/ack/{token_of(release)}")).text()
    assert "已超时" not in html
    web.clock.advance(6 * 3600)  # the release was due at 13:00
    html = await (await web.client.get(f"/ack/{token_of(release)}")).text()
    assert "已超时" in html and "尚未完成,请立即处理" in html
    # The development inbox: each message's acknowledgement link opens with a click.
    inbox = await (await web.client.get("/dev/inbox")).text()
    links = re.findall(r'<a href="(http://[^"]+/ack/[^"]+)">', inbox)
    assert links and all(link.startswith(web.cfg.service.public_url) for link in links)


# -- a form sent after its session ended (issue 15) ----------------------------------------------

ENDED_KEPT = "登录已过期,请重新登录;您填写的内容已保留"
RESTORED = "您在重新登录前填写的内容已恢复,尚未提交"


def hidden_fields(html: str) -> dict[str, str]:
    """The hidden inputs of a page, as a browser would post them back."""
    return {
        name: unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html)
    }


def end_the_session(web: Web) -> None:
    """Twelve hours on: the session is over (the browser still holds its cookie)."""
    web.clock.advance(SESSION_SECONDS + 60)


async def test_a_declaration_sent_after_the_session_ended_is_kept_through_signing_in(
    web: Web,
) -> None:
    """It was answered with a redirect to the sign-in page, and everything typed was lost."""
    await signed_in(web)
    csrf, key = await open_declare_form(web)
    end_the_session(web)
    summary = '储罐区起火,\n现场 3 人受伤 <script>alert("x")</script> & 疏散中'
    typed = declaration_form(web, summary=summary, drill="on")
    resp = await web.client.post(
        "/incidents/new",
        data={**typed, "csrf": csrf, "key": key, "action": "confirm"},
        allow_redirects=False,
    )
    html = await resp.text()
    assert resp.status == 401 and ENDED_KEPT in html
    assert "<script>alert" not in html  # kept as text, escaped
    carried = hidden_fields(html)
    assert carried["next"] == "/incidents/new" and carried["kept_form"] == "declare"
    assert {k: v for k, v in carried.items() if k.startswith("kept.")} == {
        f"kept.{k}": v for k, v in typed.items()
    }  # every typed field, and not the form's token, key or button
    assert await web.count("incidents") == 0

    # A wrong password first: what was typed is still carried.
    sign_in = {**carried, "username": "duty-wang", "password": "not the password"}
    resp = await web.client.post("/login", data=sign_in, allow_redirects=False)
    html = await resp.text()
    assert resp.status == 401 and "用户名或密码不正确" in html
    assert hidden_fields(html)["kept.summary"] == summary
    carried = hidden_fields(html)
    resp = await web.client.post(
        "/login", data={**carried, "username": "duty-wang", "password": PASSWORD},
        allow_redirects=False,
    )  # fmt: skip
    assert resp.status == 303 and resp.headers["Location"] == "/incidents/new"

    # The form again, filled in, not sent: a new token, and the officer confirms it.
    html = await (await web.client.get("/incidents/new")).text()
    assert RESTORED in html and await web.count("incidents") == 0
    assert 'value="江城化工园区储罐爆炸"' in html and 'value="江城区化工园区"' in html
    assert escape(summary) in html and 'name="drill" checked' in html
    assert field(html, "csrf") not in (csrf, "") and field(html, "key") != key
    again = {**typed, "csrf": field(html, "csrf"), "key": field(html, "key")}
    resp = await web.client.post(
        "/incidents/new", data={**again, "action": "confirm"}, allow_redirects=False
    )
    assert resp.status == 303 and await web.count("incidents") == 1
    # Taken once: the page opened again is empty.
    html = await (await web.client.get("/incidents/new")).text()
    assert RESTORED not in html and "江城化工园区储罐爆炸" not in html


async def test_a_release_sent_after_the_session_ended_comes_back_on_its_incident(
    web: Web,
) -> None:
    incident = await web.declare()
    await signed_in(web)
    csrf, key = await incident_form(web, incident["id"])
    end_the_session(web)
    page = f"/incidents/{incident['id']}"
    typed = {"published_at": picker(web, minutes=-5), "url": "https://www.example.gov.cn/1",
             "check_time_place": "on", "check_measures": "on"}  # fmt: skip
    resp = await web.client.post(
        page + "/release", data={**typed, "csrf": csrf, "key": key}, allow_redirects=False
    )
    html = await resp.text()
    assert resp.status == 401 and ENDED_KEPT in html
    carried = hidden_fields(html)
    assert carried["next"] == page and carried["kept_form"] == "release"
    resp = await web.client.post(
        "/login", data={**carried, "username": "duty-wang", "password": PASSWORD},
        allow_redirects=False,
    )  # fmt: skip
    assert resp.headers["Location"] == page
    html = await (await web.client.get(page)).text()
    assert RESTORED in html and f'value="{typed["published_at"]}"' in html
    assert 'value="https://www.example.gov.cn/1"' in html
    assert 'name="check_time_place" checked' in html and 'name="check_measures" checked' in html
    assert 'name="check_what_happened" checked' not in html
    assert await web.count("releases") == 0  # nothing recorded until it is sent again


async def test_what_is_kept_is_bounded_and_only_from_our_own_pages(web: Web) -> None:
    """Another site's form is not carried into our pages; passwords and tokens never are; the
    page to go back to is on this site; the kept values are bounded."""
    await signed_in(web)
    csrf, key = await open_declare_form(web)
    end_the_session(web)
    typed = declaration_form(web, title="标题")
    resp = await web.client.post(
        "/incidents/new", data={**typed, "csrf": csrf, "key": key},
        headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False,
    )  # fmt: skip
    html = await resp.text()
    assert resp.status == 401 and "登录已过期,请重新登录" in html and "已保留" not in html
    assert not [k for k in hidden_fields(html) if k.startswith("kept")]

    odd = {"password": "hunter2-long-pass", "api_token": "rsp_x", "Title": "x", "a b": "x",
           "summary": "长" * 4000, "location": "地" * 5000, "title": "题" * 5000,
           **{f"extra_{i}": "x" for i in range(60)}}  # fmt: skip
    resp = await web.client.post(
        "/incidents/new", data={**odd, "csrf": csrf, "key": key}, allow_redirects=False
    )
    kept = {
        k.removeprefix("kept."): v
        for k, v in hidden_fields(await resp.text()).items()
        if k.startswith("kept.")
    }
    assert not {"password", "api_token", "Title", "a b", "csrf", "key"} & set(kept)
    assert sum(map(len, kept.values())) <= 20_000 and len(kept) <= 40
    assert all(len(v) <= 5000 for v in kept.values())

    # The page to go back to, sent back by the browser, must be on this site.
    login_csrf = hidden_fields(await resp.text())["csrf"]
    resp = await web.client.post(
        "/login",
        data={"csrf": login_csrf, "username": "duty-wang", "password": PASSWORD,
              "next": "//evil.example/incidents/new", "kept_form": "declare", "kept.title": "x"},
        allow_redirects=False,
    )  # fmt: skip
    assert resp.status == 303 and resp.headers["Location"] == "/"
    html = await (await web.client.get("/incidents/new")).text()
    assert RESTORED not in html


async def test_the_live_view_of_an_incident_not_found_says_so_in_json(web: Web) -> None:
    """The script tells "not found" from a lost connection by this answer (it was the HTML
    error page, which the script could only take for a failure)."""
    await signed_in(web)
    resp = await web.client.get("/live.json?incident=INC-20000101-0001")
    assert resp.status == 404
    assert await resp.json() == {
        "code": "incident_not_found",
        "message": "找不到事件 INC-20000101-0001",
    }
    resp = await web.client.get(
        "/live.json?incident=INC-20000101-0001", headers={"Accept-Language": "en"}
    )
    assert (await resp.json())["message"] == "no incident INC-20000101-0001"
