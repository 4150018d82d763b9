"""The reviewers' pages in a real headless Chromium: sign in, find the record, decide it on
the page, and print the incident report (A4).  Screenshots go to $RESPONDER_SCREENSHOTS when
it is set (docs/screenshots/review/ holds the committed ones)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.test_pages import CHROMIUM_ARGS, chromium, login
from tests.web_helpers import PASSWORD, Web

pytest_plugins = ["tests.web_fixtures"]
__all__ = ["chromium"]  # the fixture, shared with the pages' tests


def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("RESPONDER_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


async def test_a_viewer_reads_but_cannot_decide_on_the_pages(web: Web) -> None:
    incident = await web.declare(occurred_at=web.at(hours=-6))
    await web.add_login_user("viewer-wu", "viewer")
    assert (await login(web, "viewer-wu", PASSWORD)).status == 303
    listing = await (await web.client.get("/review")).text()
    assert incident["title"] in listing and "待决定" in listing
    page = await (await web.client.get("/review/records/1")).text()
    assert "建议措施" in page and 'action="/review/records/1/decide"' not in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    resp = await web.client.post(
        "/review/records/1/decide",
        data={"action": "accept", "csrf": csrf.group(1) if csrf else ""},
        allow_redirects=False,
    )
    assert resp.status == 403
    assert await web.count("accountability_decisions") == 0
    assert (await web.client.get("/review?quarter=26Q9")).status == 422


@pytest.mark.parametrize("run_engine", [True])
async def test_decide_a_record_and_print_the_report_in_chromium(
    web: Web, chromium: Path, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    incident = await web.declare(occurred_at=web.at(hours=-6))
    await web.wait_for("SELECT COUNT(*) FROM notifications WHERE status = 'sent'")
    await web.add_login_user("reviewer-zhang", "reviewer")
    base = str(web.client.make_url("/"))
    out = shots(tmp_path)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900}, locale="zh-CN")
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security" in m.text else None)  # fmt: skip
            await page.goto(base + "login")
            await page.fill("input[name=username]", "reviewer-zhang")
            await page.fill("input[name=password]", PASSWORD)
            async with page.expect_navigation():
                await page.get_by_role("button", name=re.compile("登录")).click()
            await page.goto(base + "review?state=open")
            assert incident["title"] in await page.inner_text("main")
            await page.click("a[href='/review/records/1']")
            await page.wait_for_load_state()
            assert "通报批评" in await page.inner_text("main")
            # Exempt without a reason: refused on the page, nothing decided.
            await page.check("input[value=exempt]")
            async with page.expect_navigation():
                await page.get_by_role("button", name=re.compile("提交决定")).click()
            assert "理由" in await page.inner_text("[role=alert]")
            assert await web.count("accountability_decisions") == 0
            await page.check("input[value=exempt]")
            await page.fill("textarea[name=reason]", "证据显示短信网关当晚全部失败,通信中断")
            async with page.expect_navigation():
                await page.get_by_role("button", name=re.compile("提交决定")).click()
            assert page.url.endswith("/review/records/1")
            main = await page.inner_text("main")
            assert "免责" in main and "更正决定" in main  # decided; now only correctable
            await page.screenshot(path=str(out / "record-decided.png"), full_page=True)
            await page.goto(base + f"review/reports/incidents/{incident['id']}")
            text = await page.inner_text("body")
            assert "审计链校验" in text and "免责" in text
            await page.emulate_media(media="print")
            await page.screenshot(path=str(out / "incident-report-print.png"), full_page=True)
            await page.pdf(path=str(out / "incident-report.pdf"), format="A4",
                           print_background=True)  # fmt: skip
            assert violations == []
        finally:
            await browser.close()
    row = await web.db.fetchone("SELECT measure, decided_by FROM accountability_decisions")
    assert tuple(row) == ("exempt", "user:reviewer-zhang")
    assert (out / "incident-report.pdf").stat().st_size > 10_000
