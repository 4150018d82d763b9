"""The review over HTTP: who may decide, what a bad request changes (nothing), the metric
that keeps drills apart, and reports whose printed head still verifies later — and stops
verifying once an evidence row is edited (``responder verify-audit --expect``, a real process).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from responder.store import Database
from tests.conftest import CONFIG_PATH
from tests.web_helpers import SECRET, Web, assert_error_body

pytest_plugins = ["tests.web_fixtures"]
Dump = Callable[[Database], Awaitable[dict[str, list[tuple[Any, ...]]]]]


async def breached_record(web: Web, **fields: Any) -> tuple[str, int]:
    """A level II incident declared 6 h after it occurred: its 5 h release duty breached."""
    incident = await web.declare(occurred_at=web.at(hours=-6), **fields)
    row = await web.db.fetchone(
        "SELECT id FROM accountability_records WHERE incident_id = ?", (incident["id"],)
    )
    return incident["id"], row[0] if row else 0


def verify_audit(db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``responder verify-audit`` as a person runs it where the service runs: with the server
    secret's key file (the test app's secret), which authenticates the keyed entries."""
    key = db.parent / "secret.key"
    key.write_text(base64.b64encode(SECRET).decode() + "\n")
    return subprocess.run(
        [sys.executable, "-m", "responder.cli", "--config", str(CONFIG_PATH), "--db", str(db),
         "--lang", "zh", "verify-audit", *extra],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env={**os.environ, "RESPONDER_SECRET_FILE": str(key)},
    )  # fmt: skip


async def test_viewers_and_duty_officers_cannot_decide_reviewers_can(
    web: Web, dump_tables: Dump
) -> None:
    _, rid = await breached_record(web)
    path = f"/api/v1/accountability/{rid}/decisions"
    before = await dump_tables(web.db)
    for who in ("viewer", "duty_officer"):
        resp = await web.post(path, {"action": "accept"}, who)
        assert resp.status == 403, await resp.text()
        assert_error_body(await resp.json())
    resp = await web.post(path, {"action": "accept"}, "none")
    assert resp.status == 401
    assert await dump_tables(web.db) == before
    resp = await web.post(path, {"action": "accept"}, "reviewer")
    data = await resp.json()
    assert resp.status == 201, data
    assert data["measure"] == "criticism"
    assert data["record"]["state"] == "decided"
    assert data["record"]["decisions"][0]["decided_by"] == "user:reviewer-1"


async def test_bad_review_requests_are_refused_and_change_nothing(
    web: Web, dump_tables: Dump
) -> None:
    _, rid = await breached_record(web)
    base = f"/api/v1/accountability/{rid}"
    first = await web.post(f"{base}/decisions", {"action": "accept"}, "reviewer")
    decision = (await first.json())["id"]
    before = await dump_tables(web.db)
    cases: list[tuple[str, Any, int, str]] = [
        (f"{base}/decisions", {"action": "exempt"}, 422, "invalid"),  # no reason
        (f"{base}/decisions", {"action": "change", "reason": "x"}, 422, "invalid"),
        (f"{base}/decisions", {"action": "accept", "extra": 1}, 422, "invalid"),
        (f"{base}/decisions", {"action": "accept"}, 409, "already_decided"),
        (f"{base}/decisions", {"action": "accept", "corrects": decision + 1}, 409,
         "not_current_decision"),
        (f"{base}/decisions", {"action": "change", "measure": "correction", "reason": "x",
                               "corrects": decision}, 422, "correction_required_missing"),
        (f"{base}/decisions", {"action": "change", "measure": "correction", "reason": "x",
                               "correction_required": "y", "corrects": decision,
                               "correction_due_at": web.at(hours=-1)}, 422,
         "correction_due_in_past"),
        (f"{base}/decisions", {"action": "accept", "correction_due_at": "2026-12-01T10:00:00"},
         422, "invalid"),  # naive time
        ("/api/v1/accountability/999/decisions", {"action": "accept"}, 404, "record_not_found"),
        ("/api/v1/accountability/x/decisions", {"action": "accept"}, 422, "bad_id"),
        (f"{base}/interview", {"interviewee": "王芳", "reason": "r", "held_at": web.at(),
                               "place": "p", "conducted_by": "c", "correction_required": "x",
                               "correction_due_at": web.at(days=30)}, 409,
         "no_interview_decided"),
        (f"{base}/correction-report", {"received_at": web.at(), "text": "t"}, 409,
         "no_open_correction"),
    ]  # fmt: skip
    for path, body, status, code in cases:
        resp = await web.post(path, body, "reviewer")
        data = await resp.json()
        assert resp.status == status, (path, body, data)
        assert_error_body(data)
        assert data["error"] == code, (body, data)
    resp = await web.call(
        "POST",
        f"{base}/decisions",
        "reviewer",
        data=b"{",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 400
    for q in ("?format=pdf", "?year=2026&quarter=5", "?year=26&quarter=1", "?quarter=1"):
        resp = await web.get(f"/api/v1/reports/quarterly{q}", "viewer")
        assert resp.status == 422, q
    resp = await web.get("/api/v1/reports/incidents/INC-NONE", "viewer")
    assert resp.status == 404
    assert await dump_tables(web.db) == before


async def test_breached_obligations_of_drills_carry_a_drill_label(web: Web) -> None:
    """Issue 14's finding: responder_obligations{status="breached"} counted drills with no
    drill label, so an alert on real breaches fired for an exercise."""
    await breached_record(web, drill=True)
    body = await (await web.get("/metrics", "viewer")).text()
    assert 'responder_obligations{status="breached",drill="true"} 1' in body
    assert 'responder_obligations{status="breached",drill="false"} 0' in body
    assert 'responder_corrections{state="open"} 0' in body


async def test_the_complete_record_over_the_api(web: Web) -> None:
    iid, rid = await breached_record(web)
    resp = await web.get(f"/api/v1/accountability/{rid}/review", "viewer")
    data = await resp.json()
    assert resp.status == 200, data
    assert data["incident_id"] == iid and data["clause"].startswith("国办发〔2016〕80号")
    assert data["proposal"]["measure"] == "criticism" and data["still_open"]
    assert data["overrun_s"] == 3600
    assert any(e["source"].startswith("obligations:") for e in data["evidence"]["timeline"])


@pytest.mark.parametrize("run_engine", [True])
async def test_a_reports_head_verifies_later_and_an_edited_evidence_row_does_not(
    web: Web,
) -> None:
    iid, rid = await breached_record(web)
    # The engine sends the breach alert (real apprise posts to the app's own inbox).
    await web.wait_for(
        "SELECT COUNT(*) FROM notifications WHERE obligation_id = (SELECT obligation_id FROM"
        " accountability_records WHERE id = ?) AND status = 'sent'",
        (rid,),
    )
    await web.wait_for(
        "SELECT COUNT(*) = 0 FROM notifications WHERE status IN ('queued', 'sending')"
    )
    web.clock.advance(timedelta(days=3))
    resp = await web.post(
        f"/api/v1/accountability/{rid}/decisions", {"action": "accept"}, "reviewer"
    )
    assert resp.status == 201
    resp = await web.get(f"/api/v1/reports/incidents/{iid}", "reviewer")
    report = await resp.json()
    assert resp.status == 200, report
    audit = report["audit"]
    assert (
        audit["verified"] and audit["check"] == f"responder verify-audit --expect {audit['head']}"
    )
    sources = {e["source"].split(":")[0] for e in report["timeline"]}
    assert {"attempts", "notifications", "steps", "accountability_decisions"} <= sources
    for fmt, media in (("csv", "text/csv"), ("html", "text/html")):
        resp = await web.get(f"/api/v1/reports/incidents/{iid}?format={fmt}", "reviewer")
        text = await resp.text()
        assert resp.status == 200 and resp.content_type == media
        assert "verified, head" in text or "审计链校验" in text
    html = await (await web.get(f"/api/v1/reports/incidents/{iid}?format=html", "viewer")).text()
    assert '<link rel="stylesheet" href="/static/report.css">' in html  # the pages' CSP

    db = Path(web.cfg.service.database)
    head = audit["head"]
    done = verify_audit(db, "--expect", head)
    assert done.returncode == 0, done.stderr
    # Someone edits an attempt's outcome in the database file (around the service).
    with_edit = Database(str(db))
    await with_edit.open()
    try:
        await with_edit.transact(
            lambda tx: tx.execute(
                "UPDATE attempts SET outcome = 'error', error = 'gateway down' WHERE id ="
                " (SELECT MIN(a.id) FROM attempts a JOIN notifications n ON"
                " n.id = a.notification_id WHERE n.incident_id = ?)",
                (iid,),
            )
        )
    finally:
        await with_edit.close()
    done = verify_audit(db, "--expect", head)
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert "证据记录已被篡改" in line and "attempts:" in line, line


async def test_reloading_a_report_appends_nothing_a_change_seals_it_anew(web: Web) -> None:
    """Issue 16: every GET of a report appended a ``report.made`` entry, so reloading the page
    or a printer's preview grew the audit log without limit.  The same report (same subject,
    every row it shows unchanged) is the same document: its entry is given again."""
    from tests.test_pages import login
    from tests.web_helpers import PASSWORD

    iid, _ = await breached_record(web)
    await web.add_login_user("reviewer-li", "reviewer")
    assert (await login(web, "reviewer-li", PASSWORD)).status == 303
    made = "action = 'report.made'"
    heads = set()
    for _ in range(3):  # reloads of the page, and the API in each of its formats
        page = await (await web.client.get(f"/review/reports/incidents/{iid}")).text()
        shown = re.findall(r"verify-audit --expect (\d+:[0-9a-f]{64})", page)
        assert shown, page
        heads |= set(shown)
        report = await (await web.get(f"/api/v1/reports/incidents/{iid}", "viewer")).json()
        heads.add(report["audit"]["head"])
        for fmt in ("csv", "html"):
            resp = await web.get(f"/api/v1/reports/incidents/{iid}?format={fmt}", "reviewer")
            assert resp.status == 200
    assert await web.count("audit_log", made) == 1
    assert len(heads) == 1 and None not in heads
    (first,) = heads

    # What it shows changed (the release came): the next report is sealed anew.
    resp = await web.post(f"/api/v1/incidents/{iid}/releases", {"published_at": web.at()})
    assert resp.status == 201, await resp.text()
    report = await (await web.get(f"/api/v1/reports/incidents/{iid}", "viewer")).json()
    assert report["audit"]["verified"] and report["audit"]["head"] != first
    assert await web.count("audit_log", made) == 2
    # Another subject is another report.
    resp = await web.get("/api/v1/reports/quarterly?year=2026&quarter=4", "viewer")
    assert resp.status == 200
    assert await web.count("audit_log", made) == 3
    db = Path(web.cfg.service.database)
    for head in (first, report["audit"]["head"]):
        done = verify_audit(db, "--expect", head)
        assert done.returncode == 0, done.stderr
