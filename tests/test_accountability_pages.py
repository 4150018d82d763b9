"""The reviewers' pages in a real headless Chromium: sign in, find the record, decide it on
the page, and print the incident report (A4).  Screenshots go to $RESPONDER_SCREENSHOTS when
it is set (docs/screenshots/review/ holds the committed ones)."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest

from responder.timeutil import show
from tests.test_pages import CHROMIUM_ARGS, chromium, login
from tests.web_helpers import PASSWORD, Web, rfc3339

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
            # The same page in English: one language, nothing Chinese the service wrote.
            await page.goto(base + "lang/en?next=/review/records/1")
            main = await page.inner_text("main")
            assert "exempted" in main and "Correct decision" in main and "免责" not in main
            await page.screenshot(path=str(out / "record-decided-en.png"), full_page=True)
            await page.goto(base + "lang/zh?next=/review")
            assert "已决定:免责" in await page.inner_text("main")
            await page.screenshot(path=str(out / "list.png"), full_page=True)
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


async def test_a_correction_reminder_on_a_closed_incident_is_still_open_on_its_ack_page(
    web: Web,
) -> None:
    """Issue 16: the acknowledgement page of a correction's reminder said "the incident is
    closed: nothing more to do" — but a correction (限期整改) runs on after the incident."""
    from responder.ops import Ops
    from responder.secret import ack_token
    from tests.test_accountability import fire_due

    incident = await web.declare(occurred_at=web.at(hours=-6))
    due = web.clock.now() + timedelta(days=14)
    resp = await web.post(
        "/api/v1/accountability/1/decisions",
        {"action": "change", "measure": "correction", "reason": "夜间无人值守",
         "correction_required": "建立夜间值班", "correction_due_at": rfc3339(due)},
        "reviewer",
    )  # fmt: skip
    assert resp.status == 201, await resp.text()
    resp = await web.post(f"/api/v1/incidents/{incident['id']}/close", {"reason": "处置完毕"})
    assert resp.status == 200, await resp.text()
    assert await fire_due(Ops(web.db, web.cfg, web.clock)) >= 1  # the notice to the head
    row = await web.db.fetchone(
        "SELECT n.ack_nonce FROM notifications n JOIN obligations o ON o.id = n.obligation_id"
        " WHERE o.kind = 'correction' ORDER BY n.id LIMIT 1"
    )
    link = "/ack/" + ack_token(b"x" * 32, row[0])  # fire_due's secret
    shown = show(due, web.cfg.tz)

    page = await (await web.client.get(link)).text()
    assert "无需再处理" not in page
    assert "事件虽已结束,但整改尚未完成" in page and shown in page
    assert '<form method="post">' in page
    await web.client.get("/lang/en")  # the switch: the page in English from now on
    english = await (await web.client.get(link)).text()
    assert "The incident is closed, but the correction is still open" in english
    assert "nothing more to do" not in english
    await web.client.get("/lang/zh")

    web.clock.advance(timedelta(days=15))  # overdue, and still to be done
    page = await (await web.client.get(link)).text()
    assert "此事项已超时 24小时,尚未完成" in page and "无需再处理" not in page
    done = await (await web.client.post(link)).text()
    assert "已确认收到" in done and "无需再处理" not in done
    assert await web.count("notifications", "acked_at IS NOT NULL") == 1


CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")


def visible(html: str) -> str:
    """The page's text, without tags, script or the language switch's own name."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    text = re.sub(r'<a [^>]*hreflang="zh-CN"[^>]*>中文</a>', " ", text)
    return re.sub(r"<[^>]+>", " ", text)


async def test_the_review_pages_are_in_one_language(web: Web) -> None:
    """Issue 16: the reviewers' pages showed Chinese and English side by side.  Now the
    page's language (the switch, else the browser's) decides every text the service writes:
    in English, nothing Chinese is left but what people typed or named (the incident's
    title, people's names, the clause as the regulation words it)."""
    incident = await web.declare(occurred_at=web.at(hours=-6))
    await web.add_login_user("reviewer-zhao", "reviewer")
    assert (await login(web, "reviewer-zhao", PASSWORD)).status == 303
    resp = await web.post("/api/v1/accountability/1/decisions", {"action": "accept"}, "reviewer")
    assert resp.status == 201
    names = [incident["title"], "国办发〔2016〕80号 第三部分 (二)"]
    names += [p.name for p in web.cfg.people]

    await web.client.get("/lang/en")
    for path in ("/review", "/review/records/1"):
        page = visible(await (await web.client.get(path)).text())
        for name in names:
            page = page.replace(name, " ")
        assert not CJK.findall(page), (path, sorted(set(CJK.findall(page))))
    page = await (await web.client.get("/review/records/1")).text()
    assert "Proposed measure" in page and "notified criticism" in page
    assert "a first breach" in page and "Correct decision #1" in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    resp = await web.client.post(
        "/review/records/1/decide",
        data={"action": "exempt", "corrects": "1", "csrf": csrf.group(1)},
    )
    page = await resp.text()
    assert resp.status == 422 and "a change or an exemption needs a reason" in page
    assert "须说明理由" not in page

    await web.client.get("/lang/zh")
    for path in ("/review", "/review/records/1"):
        page = visible(await (await web.client.get(path)).text())
        for english in ("Proposed", "Accept", "Evidence", "notified criticism", "first breach",
                        "Decided", "Records", "Overrun", "Unit", "open"):  # fmt: skip
            assert english not in page, (path, english)
    page = await (await web.client.get("/review/records/1")).text()
    assert "建议措施" in page and "首次超时" in page and "通报批评" in page


_GEOMETRY = """els => els.map(input => {
    const label = input.closest('label');
    const words = document.createRange();  // the first line of the label's own words
    words.selectNodeContents(label.querySelector('span').firstChild);
    const line = words.getClientRects()[0];
    const box = input.getBoundingClientRect(), l = label.getBoundingClientRect();
    return {id: input.id, label_h: l.height, in_label: box.left >= l.left && box.right <= l.right,
            gap: line.left - box.right, off: Math.abs((box.top + box.bottom) / 2
            - (line.top + line.bottom) / 2), w: box.width};
})"""


async def _sit_with_their_labels(page: object, selector: str) -> list[dict[str, float]]:
    """Each input's label is a 44 px tap target with the input on the first line of its text,
    just before it."""
    boxes = await page.eval_on_selector_all(selector, _GEOMETRY)  # type: ignore[attr-defined]
    assert boxes, selector
    for b in boxes:
        assert b["label_h"] >= 44, b
        assert b["in_label"] and 0 <= b["gap"] <= 16 and b["off"] <= 8, b
        assert b["w"] < 40, b  # not stretched across the form
    return boxes


async def test_radios_and_checkboxes_sit_with_their_labels_in_chromium(
    web: Web, chromium: Path, tmp_path: Path
) -> None:
    """Issue 16: the decision's radio buttons sat apart from their labels.  Measured in a real
    browser, on the decision form and the incident page's release checklist; both usable from
    the keyboard (arrows move between radios, space ticks a box)."""
    from playwright.async_api import async_playwright

    incident = await web.declare(occurred_at=web.at(hours=-6))
    await web.add_login_user("admin-sun", "admin")  # may both record a release and decide
    base = str(web.client.make_url("/"))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            for width in (1100, 390):  # a desk and a phone
                page = await browser.new_page(viewport={"width": width, "height": 900},
                                              locale="zh-CN")  # fmt: skip
                await page.goto(base + "login")
                await page.fill("input[name=username]", "admin-sun")
                await page.fill("input[name=password]", PASSWORD)
                async with page.expect_navigation():
                    await page.get_by_role("button", name=re.compile("登录")).click()
                await page.goto(base + "review/records/1")
                await _sit_with_their_labels(page, "#decide input[type=radio]")
                await page.focus("#action-accept")
                await page.keyboard.press("ArrowDown")
                assert await page.is_checked("#action-change")
                await page.click("label[for=action-exempt] span")  # the words select it
                assert await page.is_checked("#action-exempt")
                await page.goto(base + f"incidents/{incident['id']}")
                boxes = await _sit_with_their_labels(
                    page, "input[type=checkbox][id^=release-check_]"
                )
                first = "#" + str(boxes[0]["id"])
                await page.focus(first)
                await page.keyboard.press("Space")
                assert await page.is_checked(first)
                await page.close()
        finally:
            await browser.close()
