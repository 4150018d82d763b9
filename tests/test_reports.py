"""Reports: the quarterly notice's figures against a small example worked out by hand, and
``responder report`` / ``verify-audit`` as real processes on a real database file."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from responder.accountability import CorrectionReport, Decide
from responder.clock import FakeClock
from responder.models import CloseIncident, DeclareIncident, PressConferenceHeld, RecordRelease
from responder.ops import Ops
from responder.store import Database
from tests.conftest import CONFIG_PATH


def t(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00")


async def incident(
    ops: Ops,
    clock: FakeClock,
    unit: str,
    occurred: str,
    declared: str,
    released: str | None = None,
    conference: str | None = None,
    closed: str | None = None,
    drill: bool = False,
) -> str:
    clock.set(t(declared))
    iid = await ops.declare(
        DeclareIncident(
            title=f"{unit} {occurred}", category="accident", level="II",
            occurred_at=t(occurred), lead_unit=unit, drill=drill,
        ),
        "duty",
    )  # fmt: skip
    if released:
        clock.set(max(clock.now(), t(released)))
        await ops.record_release(iid, RecordRelease(published_at=t(released)), "duty")
    if conference:
        clock.set(max(clock.now(), t(conference)))
        await ops.press_conference_held(
            iid, PressConferenceHeld(held_at=t(conference), principal_leader_spoke=True), "duty"
        )
    if closed:
        clock.set(max(clock.now(), t(closed)))
        await ops.close(iid, CloseIncident(reason="处置完毕"), "duty")
    return iid


async def record_of(ops: Ops, iid: str) -> int:
    row = await ops.db.fetchone(
        "SELECT id FROM accountability_records WHERE incident_id = ?", (iid,)
    )
    assert row is not None
    return int(row[0])


async def example(ops: Ops, clock: FakeClock) -> None:
    """2026 Q4, by hand (Asia/Shanghai):

    emergency  A  occurred 10-10 08:00, released 10:00 (2 h), conference 10-11 06:00 (22 h):
                  both in time; closed before the follow-up was due (waived).
               B  occurred 11-20 08:00, declared and released 15:00: release 2 h late
                  (7 h after), breached; decided 限期整改, due 2027-01-15: open.
               E  (Q3) occurred 09-01 08:00, released 15:00, breached; 限期整改 due 09-20,
                  its report received 09-18: last quarter's correction, re-checked.
    health     C  occurred 12-01 08:00, released 12:00 (4 h): in time.
               D  a drill, occurred 12-05 08:00, declared and released 14:00: breached, but a
                  drill: in the drill section only, no record.
    """
    e = await incident(ops, clock, "emergency", "2026-09-01T08:00", "2026-09-01T15:00",
                       released="2026-09-01T15:00", closed="2026-09-01T15:00")  # fmt: skip
    clock.set(t("2026-09-02T10:00"))
    first = await ops.decide(
        await record_of(ops, e),
        Decide(action="change", measure="correction", reason="夜间无人值守",
               correction_required="建立夜间值班", correction_due_at=t("2026-09-20T17:00")),
        "rev",
    )  # fmt: skip
    clock.set(t("2026-09-18T10:00"))
    await ops.record_correction_report(
        first["record_id"], CorrectionReport(received_at=clock.now(), text="已建立"), "rev"
    )
    await incident(ops, clock, "emergency", "2026-10-10T08:00", "2026-10-10T09:00",
                   released="2026-10-10T10:00", conference="2026-10-11T06:00",
                   closed="2026-10-11T07:00")  # fmt: skip
    b = await incident(ops, clock, "emergency", "2026-11-20T08:00", "2026-11-20T15:00",
                       released="2026-11-20T15:00", closed="2026-11-20T15:00")  # fmt: skip
    clock.set(t("2026-12-01T09:00"))
    await ops.decide(
        await record_of(ops, b),
        Decide(action="change", measure="correction", reason="第二次超时",
               correction_required="完善发布流程", correction_due_at=t("2027-01-15T17:00")),
        "rev",
    )  # fmt: skip
    await incident(ops, clock, "health", "2026-12-01T08:00", "2026-12-01T08:30",
                   released="2026-12-01T12:00", closed="2026-12-01T12:00")  # fmt: skip
    await incident(ops, clock, "health", "2026-12-05T08:00", "2026-12-05T14:00",
                   released="2026-12-05T14:00", closed="2026-12-05T14:00", drill=True)  # fmt: skip
    clock.set(t("2027-01-10T09:00"))


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "responder.cli", "--config", str(CONFIG_PATH), "--db", str(db),
         "--lang", "zh", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_the_quarterly_notice_against_a_hand_computed_example(
    ops: Ops, clock: FakeClock, db_path: Path, tmp_path: Path
) -> None:
    await example(ops, clock)
    await ops.db.close()  # the command line opens the file itself, as an operator would

    out = tmp_path / "q4.json"
    done = cli(db_path, "report", "quarterly", "--year", "2026", "--quarter", "4",
               "--format", "json", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    units = {u["unit"]: u for u in report["units"]}
    em, he = units["emergency"], units["health"]
    assert (em["incidents"], em["obligations"], em["met_on_time"], em["breached"]) == (2, 3, 2, 1)
    assert em["time_to_release"]["median_s"] == 16200  # 2 h and 7 h
    assert em["time_to_release"]["worst_s"] == 25200
    assert em["time_to_press_conference"]["median_s"] == 79200  # 22 h, once
    assert em["breaches"] == 1
    assert em["measures"] == {"criticism": 0, "interview": 0, "correction": 1, "exempt": 0,
                              "undecided": 0}  # fmt: skip
    assert [c["state"] for c in em["open_corrections"]] == ["open"]
    assert [(c["required"], c["state"]) for c in em["last_quarter_corrections"]] == [
        ("建立夜间值班", "received")
    ]
    assert (he["incidents"], he["obligations"], he["met_on_time"], he["breached"]) == (1, 1, 1, 0)
    assert he["time_to_release"]["worst_s"] == 14400
    assert he["breaches"] == 0 and he["measures"]["undecided"] == 0
    assert units["publicity"]["incidents"] == 0
    assert report["totals"]["incidents"] == 3  # the drill is not counted with them
    (drill,) = report["drills"]
    assert (drill["unit"], drill["incidents"], drill["breached"]) == ("health", 1, 1)

    # The head the notice printed verifies; an evidence row edited afterwards does not.
    head = report["audit"]["head"]
    assert report["audit"]["verified"] and head
    assert cli(db_path, "verify-audit", "--expect", head).returncode == 0
    for fmt in ("csv", "html"):
        done = cli(db_path, "report", "quarterly", "--year", "2026", "--quarter", "4",
                   "--format", fmt)  # fmt: skip
        assert done.returncode == 0 and "审计链已校验" in done.stderr
        assert ("区应急管理局" in done.stdout) and (
            "verified" in done.stdout or "审计链" in done.stdout
        )
    async with Database(str(db_path)) as edit:
        await edit.transact(
            lambda tx: tx.execute(
                "UPDATE obligations SET status = 'met' WHERE status = 'breached'"
                " AND incident_id IN (SELECT id FROM incidents WHERE drill = 0)"
            )
        )
    done = cli(db_path, "verify-audit", "--expect", head)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "证据记录已被篡改" in done.stderr and "obligations:" in done.stderr
    # A report made now says so, and is not offered as verified.
    done = cli(db_path, "report", "incident", "INC-20261010-0001", "--format", "json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["audit"]["verified"] is False
    assert "审计链校验未通过" in done.stderr.splitlines()[-1]


async def test_report_refuses_in_one_line(ops: Ops, db_path: Path, tmp_path: Path) -> None:
    await ops.db.close()
    done = cli(db_path, "report", "incident", "INC-NONE")
    assert done.returncode == 1 and done.stderr.strip() == "responder: 找不到事件 INC-NONE"
    done = cli(db_path, "--lang", "en", "report", "quarterly", "--year", "2026", "--quarter", "5")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    done = cli(db_path, "report", "quarterly", "--year", "2026", "--quarter", "4",
               "--out", str(tmp_path / "no" / "such" / "dir.html"))  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("responder: 无法写入")


async def test_an_incident_report_in_every_format(ops: Ops, clock: FakeClock) -> None:
    from responder.reports import render

    iid = await incident(ops, clock, "emergency", "2026-11-26T07:00", "2026-11-26T14:00",
                         released="2026-11-26T14:00")  # fmt: skip
    report = await render.incident_report(ops, iid, "test")
    assert [o["status"] for o in report["obligations"]] == ["breached", "open", "open"]
    assert report["obligations"][0]["overrun"] == "2小时"
    csv_text = render.render(report, "csv")
    lines = csv_text.splitlines()
    assert lines[0].startswith("# incident report made") and "verified, head" in lines[0]
    assert lines[1] == "at,obligation_id,source,what,what_en"
    html = render.render(report, "html")
    assert "<style>" in html and "@page { size: A4" in html  # standalone, printable
    assert report["audit"]["head"] in html
    assert "<script" not in html
