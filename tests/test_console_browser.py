"""The duty officer's console in a real browser: headless Debian Chromium (/usr/bin/chromium)
driven by Playwright, each journey asserting what a person sees; axe-core on every page
(no serious or critical violations); a phone 390 px wide without horizontal scrolling.

axe-core is the npm package's own ``axe.min.js``, as shipped inside the ``axe-playwright-python``
wheel (a test dependency in pyproject.toml), injected into each page by Playwright.

Time: the server runs on the test's FakeClock; the page's own timers on Playwright's clock
(``page.clock``), so "the countdown moves without a reload" takes no wall-clock wait.  With
``RESPONDER_SCREENSHOTS=docs/screenshots`` the screenshot journey writes the README's pictures
there (otherwise into the test's temporary folder).
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from responder.web.security import SESSION_SECONDS
from tests.test_pages import CHROMIUM_ARGS, sent_notifications, token_of
from tests.web_helpers import PASSWORD, Web

pytest_plugins = ["tests.web_fixtures"]

DESK = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SEVERE = ("serious", "critical")
# The page's clock (Playwright's): any time would do, as the script counts from the server's
# clock, not the browser's.


async def hold_the_page_clock(page: Any) -> None:
    """The page's timers move only when the test says (``page.clock.run_for``)."""
    await page.clock.install(time="2026-11-26T01:00:00Z")
    await page.clock.pause_at("2026-11-26T01:00:01Z")


@pytest.fixture
def chromium() -> Path:
    path = Path("/usr/bin/chromium")
    if path.exists():
        return path
    hint = f"{path} is missing: sudo apt-get install chromium (`make test` as root installs it)"
    if os.geteuid() == 0:
        pytest.fail(hint)
    pytest.skip(hint)


@asynccontextmanager
async def browser_page(
    chromium: Path, viewport: dict[str, int] = DESK, locale: str = "zh-CN"
) -> AsyncIterator[Any]:
    """A fresh browser context (its own cookies) with one page, Chinese unless said."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport=viewport, locale=locale)
            page = await context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            yield page
            # No script error and no CSP refusal.  (An answer's status, 4xx included, is the
            # journey's to check: the browser notes each as "Failed to load resource".)
            assert [p for p in problems if "Failed to load resource" not in p] == []
        finally:
            await browser.close()


def url(web: Web, path: str) -> str:
    return str(web.client.make_url(path))


async def sign_in(page: Any, web: Web, username: str, role: str = "duty_officer") -> None:
    await web.add_login_user(username, role)
    await page.goto(url(web, "/login"))
    await page.get_by_label("用户名").fill(username)
    await page.get_by_label("密码").fill(PASSWORD)
    async with page.expect_navigation():
        await submit(page, "登录")


async def submit(page: Any, button: str) -> None:
    """Press a form's button (by its exact name) and wait for the page it leads to, stylesheet
    and all, before anything on it is read or measured."""
    await page.get_by_role("button", name=button, exact=True).click()
    await page.wait_for_load_state()


def axe_script() -> str:
    import axe_playwright_python

    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()


async def no_severe_violations(page: Any) -> None:
    """Run axe-core (WCAG 2.1 A and AA, and its best practices) on the page as it stands."""
    await page.evaluate(axe_script())
    result = await page.evaluate(
        "() => axe.run(document, {runOnly: {type: 'tag', values:"
        " ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
    )
    severe = [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in SEVERE
    ]
    assert severe == [], f"{page.url}: {severe}"


async def open_every_form(page: Any) -> None:
    """Open the collapsed forms, so that axe and the width check see them too."""
    await page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")


async def fits_a_phone(page: Any) -> None:
    """No horizontal scrolling, and every control at least 44 px tall."""
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width} px wide"
    small = await page.evaluate(
        "() => [...document.querySelectorAll('button, input:not([type=hidden]):not([type=checkbox]),"
        " select, summary, .check, header nav > a')].filter(e => e.offsetParent !== null &&"
        " e.getBoundingClientRect().height < 44).map(e => e.outerHTML.slice(0, 80))"
    )
    assert small == [], small


# -- journeys -------------------------------------------------------------------------------------


async def test_a_duty_officer_declares_watches_and_records_the_release(
    web: Web, chromium: Path
) -> None:
    async with browser_page(chromium) as page:
        await page.goto(url(web, "/"))
        assert "/login" in page.url  # anonymous: signed in first
        await no_severe_violations(page)
        await sign_in(page, web, "duty-wang")
        assert page.url == url(web, "/")
        await no_severe_violations(page)

        await page.get_by_role("link", name="申报新事件").click()
        await page.get_by_label("事件标题").fill("江城化工园区储罐爆炸")
        await page.get_by_label("事件类别").select_option("accident")
        await page.get_by_label("事件级别").select_option("II")
        await page.get_by_label("牵头单位").select_option("emergency")
        await page.get_by_label("地点").fill("江城区化工园区")
        assert await page.get_by_label("发生时间").input_value() == "2026-11-26T09:00"  # now
        await no_severe_violations(page)
        await submit(page, "预览时限与提醒")
        preview = await page.inner_text("main")
        assert "发布权威信息" in preview and "2026-11-26 14:00 +08:00" in preview
        assert "王芳(区应急管理局)" in preview
        assert await web.count("incidents") == 0
        await no_severe_violations(page)

        await submit(page, "确认申报")
        await page.wait_for_url(re.compile(r"/incidents/INC-"))
        duties = page.locator(".duty")
        assert await duties.count() == 2  # two clocks running
        release, conference = duties.nth(0), duties.nth(1)
        assert await release.get_attribute("data-state") == "open"
        # Ticking from the server's clock as real seconds pass on the page: 5:00, then 4:59.
        assert await release.locator(".clock").inner_text() in ("5:00", "4:59")
        assert await conference.locator(".clock").inner_text() in ("24:00", "23:59")
        await open_every_form(page)
        await no_severe_violations(page)

        for box in await page.locator("input[name^=check_][id^=release-]").all():
            await box.check()
        await submit(page, "记录发布")
        await page.wait_for_load_state()
        assert "已记录权威信息发布。" in await page.inner_text("main")
        assert await release.get_attribute("data-state") == "met"
        assert "按时完成" in await release.inner_text()
        assert await conference.get_attribute("data-state") == "open"  # still running
        assert await web.count("releases") == 1


async def test_a_late_declaration_is_breached_at_once(web: Web, chromium: Path) -> None:
    async with browser_page(chromium) as page:
        await sign_in(page, web, "duty-wang")
        await page.goto(url(web, "/incidents/new"))
        await page.get_by_label("事件标题").fill("六小时前的爆炸")
        await page.get_by_label("事件类别").select_option("accident")
        await page.get_by_label("事件级别").select_option("II")
        await page.get_by_label("牵头单位").select_option("emergency")
        await page.get_by_label("发生时间").fill("2026-11-26T03:00")
        await submit(page, "预览时限与提醒")
        assert "发生时间已过时限" in await page.inner_text("main")
        await submit(page, "确认申报")
        await page.wait_for_url(re.compile(r"/incidents/INC-"))
        release = page.locator(".duty").nth(0)
        assert await release.get_attribute("data-state") == "overdue"
        assert await release.locator(".clock").inner_text() == "+1:00"
        assert "已超时 1小时" in await release.inner_text()


async def test_a_form_error_keeps_what_was_typed(web: Web, chromium: Path) -> None:
    async with browser_page(chromium) as page:
        await sign_in(page, web, "duty-wang")
        await page.goto(url(web, "/incidents/new"))
        await page.get_by_label("事件标题").fill("江城化工园区储罐爆炸")
        await page.get_by_label("地点").fill("江城区化工园区")
        await page.get_by_label("发生时间").fill("2026-11-27T09:00")  # tomorrow
        await submit(page, "预览时限与提醒")
        category = page.get_by_label("事件类别")
        assert await category.get_attribute("aria-invalid") == "true"
        assert "请填写此项" in await page.locator("#category-error").inner_text()
        assert await page.get_by_label("事件标题").input_value() == "江城化工园区储罐爆炸"
        assert await page.get_by_label("地点").input_value() == "江城区化工园区"
        await no_severe_violations(page)
        await category.select_option("accident")
        await page.get_by_label("事件级别").select_option("II")
        await page.get_by_label("牵头单位").select_option("emergency")
        await submit(page, "预览时限与提醒")
        assert "不能晚于当前时间" in await page.locator("#occurred_at-error").inner_text()
        assert await page.get_by_label("发生时间").input_value() == "2026-11-27T09:00"
    assert await web.count("incidents") == 0


async def test_a_viewer_reads_without_forms_and_cannot_post(web: Web, chromium: Path) -> None:
    incident = await web.declare()
    async with browser_page(chromium) as page:
        target = url(web, f"/incidents/{incident['id']}")
        await web.add_login_user("viewer-li", "viewer")
        await page.goto(target)  # signed in first, then back here
        await page.get_by_label("用户名").fill("viewer-li")
        await page.get_by_label("密码").fill(PASSWORD)
        async with page.expect_navigation():
            await submit(page, "登录")
        assert page.url == target
        assert await page.locator("main form").count() == 0
        assert await page.get_by_role("link", name="申报事件").count() == 0
        await no_severe_violations(page)
        csrf = await page.get_attribute("input[name=csrf]", "value")  # the sign-out form's
        answer = await page.request.post(
            target + "/close", form={"csrf": csrf or "", "key": "page-x1234567", "reason": "x"}
        )
        assert answer.status == 403 and "您的角色只能查看" in await answer.text()
    assert (await web.get(f"/api/v1/incidents/{incident['id']}")).status == 200
    row = await web.db.fetchone("SELECT status FROM incidents WHERE id = ?", (incident["id"],))
    assert row is not None and row[0] == "active"


async def test_an_anonymous_visitor_is_sent_to_sign_in_and_back(web: Web, chromium: Path) -> None:
    incident = await web.declare()
    await web.add_login_user("duty-zhao")
    async with browser_page(chromium) as page:
        target = url(web, f"/incidents/{incident['id']}")
        await page.goto(target)
        assert "/login?next=" in page.url
        await page.get_by_label("用户名").fill("duty-zhao")
        await page.get_by_label("密码").fill(PASSWORD)
        async with page.expect_navigation():
            await submit(page, "登录")
        assert page.url == target
        assert incident["title"] in await page.inner_text("h1")


async def test_the_countdown_moves_without_a_reload_and_says_when_offline(
    web: Web, chromium: Path
) -> None:
    await web.declare(occurred_at=web.at(minutes=-250))  # 50 min left for the release
    async with browser_page(chromium) as page:
        await hold_the_page_clock(page)
        await sign_in(page, web, "duty-wang")
        release = page.locator(".duty").nth(0)
        assert await release.locator(".clock").inner_text() == "0:50"
        assert await release.get_attribute("data-state") == "soon"
        await page.evaluate("() => { window.notReloaded = true; }")
        # The server's clock moves 2 h; the page learns it at its next poll (10 s on its clock).
        web.clock.advance(2 * 3600)
        await page.clock.run_for(10_000)
        await page.wait_for_function(
            "() => document.querySelector('.duty').dataset.state === 'overdue'"
        )
        assert await release.locator(".clock").inner_text() == "+1:10"
        assert "已超时 1小时10分钟" in await release.inner_text()
        assert await page.evaluate("() => window.notReloaded") is True
        # The connection drops: the page says so, and the clock goes on from the last deadline.
        await page.route("**/live.json*", lambda route: route.abort())
        await page.clock.run_for(10_000)
        status = page.locator("#live-status")
        await status.wait_for(state="visible")
        assert "连接已中断" in await status.inner_text()
        await page.clock.run_for(60_000)
        assert await release.locator(".clock").inner_text() == "+1:11"


async def test_a_phone_390_px_wide_scrolls_only_down(web: Web, chromium: Path) -> None:
    incident = await web.declare(title="江城化工园区储罐爆炸,多人受伤,周边居民疏散中" * 2)
    async with browser_page(chromium, viewport=PHONE) as page:
        await sign_in(page, web, "duty-wang")
        for path in ("/", f"/incidents/{incident['id']}", "/incidents/new", "/directory"):
            await page.goto(url(web, path))
            await open_every_form(page)
            await fits_a_phone(page)
            await no_severe_violations(page)
        await page.goto(url(web, "/incidents/new"))
        await page.get_by_label("事件标题").fill("手机上申报")
        await page.get_by_label("事件类别").select_option("accident")
        await page.get_by_label("事件级别").select_option("I")
        await page.get_by_label("牵头单位").select_option("emergency")
        await submit(page, "预览时限与提醒")
        await fits_a_phone(page)


async def test_every_page_passes_axe_in_both_languages(web: Web, chromium: Path) -> None:
    incident = await web.declare()
    paths = ["/", f"/incidents/{incident['id']}", "/incidents/new", "/directory", "/nowhere"]
    for locale, signed in (("zh-CN", "登录"), ("en-US", "Sign in")):
        async with browser_page(chromium, locale=locale) as page:
            await page.goto(url(web, "/login"))
            assert signed in await page.inner_text("h1")
            await no_severe_violations(page)
            await web.add_login_user(f"duty-{locale}")
            await page.fill("#username", f"duty-{locale}")
            await page.fill("#password", PASSWORD)
            async with page.expect_navigation():
                await page.click("button.primary")
            for path in paths:
                await page.goto(url(web, path))
                await open_every_form(page)
                await no_severe_violations(page)
            lang = await page.get_attribute("html", "lang")
            assert lang == ("zh-CN" if locale == "zh-CN" else "en")


@pytest.mark.parametrize("run_engine", [True])
async def test_screenshots(web: Web, chromium: Path, tmp_path: Path) -> None:
    """The README's pictures: the dashboard, the declare preview, an incident at desk and
    phone width, and the acknowledgement page — each also checked with axe."""
    out = Path(os.environ.get("RESPONDER_SCREENSHOTS") or tmp_path)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    rows = await sent_notifications(web)  # an incident whose first alerts went out
    incident_id = rows[0]["incident_id"]
    web.clock.advance(180)
    await web.client.post(f"/ack/{token_of(rows[0])}")  # one of them acknowledged, 3 min later
    await web.declare(title="城东水厂管网污染", occurred_at=web.at(hours=-4, minutes=-20))
    await web.declare(
        title="全市防汛应急演练", category="natural_disaster", occurred_at=web.at(minutes=-30),
        drill=True, lead_unit="gov-office",
    )  # fmt: skip
    async with browser_page(chromium) as page:
        await sign_in(page, web, "duty-wang")
        await page.screenshot(path=str(out / "dashboard.png"), full_page=True)
        await page.goto(url(web, "/incidents/new"))
        await page.get_by_label("事件标题").fill("江城大桥货车起火")
        await page.get_by_label("事件类别").select_option("accident")
        await page.get_by_label("事件级别").select_option("II")
        await page.get_by_label("牵头单位").select_option("emergency")
        await page.get_by_label("发生时间").fill("2026-11-26T07:30")
        await submit(page, "预览时限与提醒")
        await page.screenshot(path=str(out / "declare-preview.png"), full_page=True)
        await page.goto(url(web, f"/incidents/{incident_id}"))
        await page.screenshot(path=str(out / "incident.png"), full_page=True)
        await page.set_viewport_size(PHONE)
        await page.goto(url(web, f"/incidents/{incident_id}"))
        await fits_a_phone(page)
        await page.screenshot(path=str(out / "incident-phone.png"), full_page=True)
        await page.goto(url(web, f"/ack/{token_of(rows[1])}"))  # opened on a phone
        await no_severe_violations(page)
        await page.screenshot(path=str(out / "ack.png"), full_page=True)
    for name in ("dashboard", "declare-preview", "incident", "incident-phone", "ack"):
        assert (out / f"{name}.png").stat().st_size > 10_000


async def test_a_form_sent_after_the_session_ended_comes_back_filled_in(
    web: Web, chromium: Path
) -> None:
    """Issue 15: the declaration typed while the session ran out was lost at the sign-in."""
    async with browser_page(chromium) as page:
        await sign_in(page, web, "duty-wang")
        await page.goto(url(web, "/incidents/new"))
        await page.get_by_label("事件标题").fill("江城化工园区储罐爆炸")
        await page.get_by_label("事件类别").select_option("accident")
        await page.get_by_label("事件级别").select_option("II")
        await page.get_by_label("牵头单位").select_option("emergency")
        await page.get_by_label("地点").fill("江城区化工园区")
        web.clock.advance(SESSION_SECONDS + 60)  # the officer was called away
        await submit(page, "预览时限与提醒")
        assert "/login" not in page.url  # the sign-in page, in answer to the form
        said = await page.get_by_role("alert").inner_text()
        assert said == "登录已过期,请重新登录;您填写的内容已保留"
        await page.get_by_label("用户名").fill("duty-wang")
        await page.get_by_label("密码").fill(PASSWORD)
        await submit(page, "登录")
        assert page.url == url(web, "/incidents/new")
        assert "尚未提交" in await page.get_by_role("status").first.inner_text()
        assert await page.get_by_label("事件标题").input_value() == "江城化工园区储罐爆炸"
        assert await page.get_by_label("地点").input_value() == "江城区化工园区"
        assert await page.get_by_label("牵头单位").input_value() == "emergency"
        assert await web.count("incidents") == 0  # not sent again by itself
        await submit(page, "预览时限与提醒")
        await submit(page, "确认申报")
        await page.wait_for_url(re.compile(r"/incidents/INC-"))
    assert await web.count("incidents") == 1


async def test_the_live_view_says_an_incident_is_gone_and_a_session_ended(
    web: Web, chromium: Path
) -> None:
    """/live.json's 404 (the incident removed) and 401 (the session over) both read "connection
    lost"; now each says what happened.  (A dropped network still says connection lost: see
    test_the_countdown_moves_without_a_reload_and_says_when_offline.)"""
    removed, kept = await web.declare(), await web.declare(title="另一起事件")
    async with browser_page(chromium) as page:
        await hold_the_page_clock(page)
        await sign_in(page, web, "duty-wang")
        await page.goto(url(web, f"/incidents/{removed['id']}"))
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if "/live.json" in r.url else None)
        with sqlite3.connect(web.cfg.service.database, timeout=10) as conn:  # FKs off: gone
            conn.execute("DELETE FROM incidents WHERE id = ?", (removed["id"],))
        await page.clock.run_for(10_000)
        status = page.locator("#live-status")
        await status.wait_for(state="visible")
        assert "找不到此事件(可能已被删除)" in await status.inner_text()
        assert "连接已中断" not in await status.inner_text()
        assert await status.locator("a").get_attribute("href") == "/"
        asked = len(polls)
        await page.clock.run_for(60_000)
        assert len(polls) == asked == 1  # nothing more to ask

        page_of_kept = f"/incidents/{kept['id']}"
        await page.goto(url(web, page_of_kept))
        web.clock.advance(SESSION_SECONDS + 60)
        await page.clock.run_for(10_000)
        await status.wait_for(state="visible")
        assert "登录已过期" in await status.inner_text()
        assert "连接已中断" not in await status.inner_text()
        async with page.expect_navigation():
            await status.locator("a").click()
        await page.get_by_label("用户名").fill("duty-wang")
        await page.get_by_label("密码").fill(PASSWORD)
        await submit(page, "登录")
        assert page.url == url(web, page_of_kept)
