"""The accountability review against a real SQLite file: the complete record, the ladder's
proposals over a year of history, decisions that are never changed (only corrected), the
correction's clock, and drills that never open a record."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from responder.accountability import CorrectionReport, Decide, RecordInterview
from responder.clock import FakeClock
from responder.config import Config
from responder.engine.fire import by_obligation, due_steps, fire_obligation
from responder.errors import BadInput, Conflict
from responder.models import CloseIncident, DeclareIncident, RecordRelease
from responder.ops import Ops
from responder.reports.records import record_file
from responder.store import Database
from responder.store.audit import verify

Dump = Callable[[Database], Awaitable[dict[str, list[tuple[Any, ...]]]]]


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def breach_at(
    ops: Ops,
    clock: FakeClock,
    declared: str,
    unit: str = "emergency",
    late: timedelta = timedelta(hours=1),
    drill: bool = False,
    close: bool = True,
) -> tuple[str, int]:
    """An incident of level II declared at ``declared``, ``late`` after its 5 h release
    deadline had passed, and released then: the release duty breached, overrun by ``late``;
    then closed (its press conference waived), unless ``close`` is false.
    Returns the incident id and its record id (0 when none was opened)."""
    now = t(declared)
    clock.set(now)
    occurred = now - timedelta(hours=5) - late
    iid = await ops.declare(
        DeclareIncident(
            title=f"{unit} 的事件",
            category="accident",
            level="II",
            occurred_at=occurred,
            lead_unit=unit,
            drill=drill,
        ),
        "duty",
    )
    await fire_due(ops)  # the declaration's catch-up and breach alert: messages queued
    await ops.record_release(iid, RecordRelease(published_at=now), "duty")
    if close:
        await ops.close(iid, CloseIncident(reason="处置完毕"), "duty")
    row = await ops.db.fetchone(
        "SELECT r.id FROM accountability_records r JOIN obligations o ON o.id = r.obligation_id"
        " WHERE r.incident_id = ? AND o.kind = 'authoritative_release'",
        (iid,),
    )
    return iid, row[0] if row else 0


async def fire_due(ops: Ops) -> int:
    """What the scheduler would fire now (without running the engine's loops)."""
    now = ops.clock.now()
    queued = 0
    for group in by_obligation(await due_steps(ops.db, now, 500)):
        fired = await ops.db.transact(
            lambda tx, g=group: fire_obligation(tx, ops.cfg, b"x" * 32, g, now)
        )
        queued += fired[0]
    return queued


async def proposal(ops: Ops, record_id: int) -> dict[str, Any]:
    view = await record_file(ops.db, ops.cfg, record_id, ops.clock.now())
    return view["proposal"]


# -- item 1: the complete record; drills open none ------------------------------------------------


async def test_a_drills_breach_opens_no_record(ops: Ops, clock: FakeClock) -> None:
    """Issue 14's finding: a drill's breach opened a record that looked like a real one."""
    iid, record = await breach_at(ops, clock, "2026-11-26T14:00:00+08:00", drill=True)
    assert record == 0
    status = await ops.db.fetchone(
        "SELECT status FROM obligations WHERE incident_id = ? AND kind = 'authoritative_release'",
        (iid,),
    )
    assert status[0] == "breached"  # the exercise shows the breach; nobody is reprimanded
    assert (await ops.db.fetchone("SELECT COUNT(*) FROM accountability_records"))[0] == 0


async def test_the_record_is_complete_and_assembled_from_the_store(
    ops: Ops, clock: FakeClock
) -> None:
    iid, rid = await breach_at(ops, clock, "2026-11-26T14:00:00+08:00")
    view = await record_file(ops.db, ops.cfg, rid, clock.now())
    assert view["incident_id"] == iid and view["unit"] == "emergency"
    assert view["unit_name"] == "区应急管理局"
    assert view["responsible_person"] == {"id": "wang-fang", "name": "王芳"}
    assert view["rule_set"] == "gbf-2016-80"
    assert view["clause"] == "国办发〔2016〕80号 第三部分 (二)"
    assert view["deadline"] == "2026-11-26T13:00:00+08:00"
    assert view["met_at"] == "2026-11-26T14:00:00+08:00"
    assert view["overrun_s"] == 3600 and not view["still_open"]
    assert not view["met_in_time_recorded_after_breach"]
    # Evidence: the steps planned at the declaration collapsed into one catch-up that fired,
    # the messages it queued, the release that met it — each with its time and its row.
    timeline = view["evidence"]["timeline"]
    sources = {e["source"].split(":")[0] for e in timeline}
    assert {"incidents", "obligations", "steps", "notifications", "releases"} <= sources
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    assert view["evidence"]["summary"]["messages"] >= 1
    assert view["proposal"]["measure"] == "criticism"


async def test_met_in_time_but_recorded_after_the_breach_is_flagged_first(
    ops: Ops, clock: FakeClock, cfg: Config, db: Database
) -> None:
    """Released at 12:30 for a 13:00 deadline, typed in at 14:00 after the scheduler had
    breached it: the reviewer sees 'likely no fault', and the ladder proposes exemption."""
    from responder import obligations

    clock.set(t("2026-11-26T09:00:00+08:00"))
    iid = await ops.declare(
        DeclareIncident(
            title="按时发布", category="accident", level="II",
            occurred_at=t("2026-11-26T08:00:00+08:00"), lead_unit="emergency",
        ),
        "duty",
    )  # fmt: skip
    clock.set(t("2026-11-26T13:00:00+08:00"))
    ob = await db.fetchone(
        "SELECT id FROM obligations WHERE incident_id = ? AND kind = 'authoritative_release'",
        (iid,),
    )
    rid = await db.transact(lambda tx: obligations.breach(tx, cfg, ob[0], clock.now()))
    clock.set(t("2026-11-26T14:00:00+08:00"))
    await ops.record_release(
        iid, RecordRelease(published_at=t("2026-11-26T12:30:00+08:00")), "duty"
    )
    view = await record_file(db, cfg, rid, clock.now())
    assert view["met_in_time_recorded_after_breach"] and view["recorded_late"]
    assert view["overrun_s"] == 0
    assert view["recording_delay_s"] == 5400
    assert view["proposal"]["measure"] == "exempt"
    assert "无过错" in view["proposal"]["grounds"][0]


# -- item 2: the ladder over a year of history -------------------------------------------------------


async def test_the_ladder_over_a_year_of_history(ops: Ops, clock: FakeClock) -> None:
    """Several units, a year and more of breaches; each proposal as the ladder in
    config/responder.toml says (约谈 on a repeat within 12 months or an overrun over 4 h;
    通报批评 otherwise), worked out by hand here."""
    # health: breached in January 2025, then 13 months later: not a repeat.
    _, h1 = await breach_at(ops, clock, "2025-01-05T10:00:00+08:00", "health")
    _, h2 = await breach_at(ops, clock, "2026-02-10T10:00:00+08:00", "health")
    # emergency: first in January, again in June of the same year: a repeat.
    _, e1 = await breach_at(ops, clock, "2026-01-10T10:00:00+08:00", "emergency")
    _, e2 = await breach_at(ops, clock, "2026-06-10T10:00:00+08:00", "emergency")
    # publicity: a first breach, but 5 hours over: over the 4 h bound.
    _, p1 = await breach_at(
        ops, clock, "2026-03-01T10:00:00+08:00", "publicity", timedelta(hours=5)
    )
    # gov-office: a breach exempted (communications outage), then another: still a first.
    _, g1 = await breach_at(ops, clock, "2026-01-05T10:00:00+08:00", "gov-office")
    await ops.decide(g1, Decide(action="exempt", reason="通信中断,证据显示短信网关全部失败"), "rev")
    _, g2 = await breach_at(ops, clock, "2026-03-05T10:00:00+08:00", "gov-office")
    # emergency again, exactly 12 months after its June breach: within the window's edge.
    _, e3 = await breach_at(ops, clock, "2027-06-10T10:00:00+08:00", "emergency")
    # ... and one day later than 12 months after e3: a first breach again.
    _, e4 = await breach_at(ops, clock, "2028-06-11T10:00:00+08:00", "emergency")

    expected = {
        h1: ("criticism", []), h2: ("criticism", []),
        e1: ("criticism", []), e2: ("interview", [e1]),
        p1: ("interview", []),
        g2: ("criticism", []),
        e3: ("interview", [e2]), e4: ("criticism", []),
    }  # fmt: skip
    got = {}
    for rid in expected:
        p = await proposal(ops, rid)
        got[rid] = (p["measure"], p["prior_records"])
    assert got == expected
    p = await proposal(ops, e2)
    assert p["correction_within_s"] == 30 * 86400
    assert "此前 12 个月内已有超时记录" in p["grounds"][0]
    assert "超过 4小时" in (await proposal(ops, p1))["grounds"][0]


async def test_a_second_breach_of_the_same_incident_is_not_a_repeat(
    ops: Ops, clock: FakeClock
) -> None:
    """The release and the press conference of one incident both missed: one episode, not a
    unit that fails again and again."""
    iid, _ = await breach_at(ops, clock, "2026-11-26T14:00:00+08:00", close=False)
    clock.set(t("2026-11-27T12:00:00+08:00"))  # past the 24 h press conference deadline
    from responder.models import PressConferenceHeld

    await ops.press_conference_held(
        iid, PressConferenceHeld(held_at=clock.now(), principal_leader_spoke=True), "duty"
    )
    pc = await ops.db.fetchone(
        "SELECT r.id FROM accountability_records r JOIN obligations o ON o.id = r.obligation_id"
        " WHERE o.kind = 'press_conference'"
    )
    assert (await proposal(ops, pc[0]))["measure"] == "criticism"


# -- decisions: never changed, only corrected ---------------------------------------------------------


async def test_a_decided_record_cannot_be_changed_only_corrected(
    ops: Ops, clock: FakeClock, dump_tables: Dump
) -> None:
    iid, rid = await breach_at(ops, clock, "2026-11-26T14:00:00+08:00")
    clock.advance(timedelta(days=20))
    first = await ops.decide(rid, Decide(action="accept"), "reviewer-1")
    assert first["measure"] == "criticism"
    before = await dump_tables(ops.db)
    with pytest.raises(Conflict) as e:
        await ops.decide(rid, Decide(action="exempt", reason="再议"), "reviewer-2")
    assert e.value.code == "already_decided"
    with pytest.raises(Conflict) as e:
        await ops.decide(rid, Decide(action="exempt", reason="再议", corrects=first["id"] + 7), "r")
    assert e.value.code == "not_current_decision"
    refused = (sqlite3.IntegrityError, psycopg.IntegrityError)  # either store's triggers
    with pytest.raises(refused):  # around the service: the table refuses
        await ops.db.transact(
            lambda tx: tx.execute("UPDATE accountability_decisions SET measure = 'exempt'")
        )
    with pytest.raises(refused):
        await ops.db.transact(lambda tx: tx.execute("DELETE FROM accountability_decisions"))
    assert await dump_tables(ops.db) == before

    clock.advance(timedelta(days=1))
    second = await ops.decide(
        rid,
        Decide(action="exempt", reason="短信网关故障,证据显示全部发送失败", corrects=first["id"]),
        "reviewer-2",
    )
    view = await record_file(ops.db, ops.cfg, rid, clock.now())
    decisions = view["decisions"]
    assert [d["id"] for d in decisions] == [first["id"], second["id"]]
    assert decisions[0]["measure"] == "criticism" and decisions[0]["corrected_by"] == second["id"]
    assert not decisions[0]["current"] and decisions[1]["current"]
    assert decisions[1]["corrects"] == first["id"] and decisions[1]["measure"] == "exempt"
    assert view["decided_measure"] == "exempt" and view["state"] == "decided"
    entries = await ops.db.fetchall(
        "SELECT action, actor, subject FROM audit_log WHERE action LIKE 'accountability.%'"
        " ORDER BY seq"
    )
    assert [tuple(e) for e in entries] == [
        ("accountability.decided", "reviewer-1", iid),
        ("accountability.corrected", "reviewer-2", iid),
    ]
    assert (await verify(ops.db.reader)).ok


async def test_a_change_or_an_exemption_needs_a_reason() -> None:
    for body in (
        {"action": "change", "measure": "interview"},
        {"action": "exempt"},
        {"action": "exempt", "reason": "   "},
        {"action": "change", "reason": "x"},  # no measure
        {"action": "accept", "measure": "interview"},
        {"action": "change", "measure": "exempt", "reason": "x"},
    ):
        with pytest.raises(ValidationError):
            Decide.model_validate(body)


# -- item 3: the interview, the correction and its reminders --------------------------------------------


async def test_interview_then_correction_with_reminders_to_the_head(
    ops: Ops, clock: FakeClock, db: Database
) -> None:
    # Closed (breach_at closes it): the review comes after the incident is over.
    _, rid = await breach_at(ops, clock, "2026-11-26T14:00:00+08:00", late=timedelta(hours=6))
    clock.set(t("2026-12-10T10:00:00+08:00"))
    decided = await ops.decide(rid, Decide(action="accept"), "rev")
    assert decided["measure"] == "interview"  # 6 h over the 4 h bound
    with pytest.raises(Conflict):
        await ops.record_correction_report(
            rid, CorrectionReport(received_at=clock.now(), text="x"), "rev"
        )
    clock.set(t("2026-12-12T15:00:00+08:00"))
    with pytest.raises(BadInput):
        await ops.record_interview(
            rid,
            RecordInterview(
                interviewee="王芳(局长)", reason="r", held_at=clock.now(), place="p",
                conducted_by="c", correction_required="x",
                correction_due_at=clock.now() - timedelta(days=1),
            ),
            "rev",
        )  # fmt: skip
    done = await ops.record_interview(
        rid,
        RecordInterview(
            interviewee="王芳(区应急管理局局长)",
            reason="权威信息发布超时 6 小时",
            held_at=t("2026-12-12T14:00:00+08:00"),
            place="区政府 3 楼会议室",
            conducted_by="区政府办公室 周华",
            correction_required="建立夜间值班发布流程并演练",
            correction_due_at=t("2027-01-12T17:00:00+08:00"),
        ),
        "rev",
    )
    with pytest.raises(Conflict):  # recorded once; never changed
        await ops.record_interview(
            rid,
            RecordInterview(
                interviewee="x", reason="x", held_at=clock.now(), place="x", conducted_by="x",
                correction_required="x", correction_due_at=t("2027-01-12T17:00:00+08:00"),
            ),
            "rev",
        )  # fmt: skip
    # The correction's clock: steps to the head of the unit, on a closed incident.
    steps = await db.fetchall(
        "SELECT s.name, s.due_at, s.audience, s.status FROM steps s JOIN obligations o"
        " ON o.id = s.obligation_id WHERE o.kind = 'correction' ORDER BY s.due_at"
    )
    assert [s["name"] for s in steps] == ["decided", "T-7d", "T-1d", "deadline"]
    assert {s["audience"] for s in steps} == {'["head@emergency"]'}
    assert {s["status"] for s in steps} == {"pending"}
    view = await record_file(db, ops.cfg, rid, clock.now())
    assert view["interviews"][0]["place"] == "区政府 3 楼会议室"
    assert view["corrections"][0]["state"] == "open"
    # Overdue, visibly; then the report comes in late.
    clock.set(t("2027-01-13T09:00:00+08:00"))
    view = await record_file(db, ops.cfg, rid, clock.now())
    assert view["corrections"][0]["state"] == "overdue"
    reported = await ops.record_correction_report(
        rid, CorrectionReport(received_at=clock.now(), text="已建立夜间发布流程"), "rev"
    )
    assert reported == {"id": done["correction_id"], "record_id": rid, "in_time": False}
    view = await record_file(db, ops.cfg, rid, clock.now())
    assert view["corrections"][0]["state"] == "received_late"
    pending = await db.fetchone(
        "SELECT COUNT(*) FROM steps s JOIN obligations o ON o.id = s.obligation_id"
        " WHERE o.kind = 'correction' AND s.status = 'pending'"
    )
    assert pending[0] == 0  # the reminders stop


async def test_correcting_a_decision_withdraws_its_correction(ops: Ops, clock: FakeClock) -> None:
    _, rid = await breach_at(ops, clock, "2026-11-26T14:00:00+08:00")
    first = await ops.decide(
        rid,
        Decide(
            action="change", measure="correction", reason="多次延误", correction_required="整改"
        ),
        "rev",
    )
    with pytest.raises(BadInput):
        await ops.decide(
            rid,
            Decide(action="change", measure="correction", reason="x", corrects=first["id"]),
            "rev",
        )  # no correction_required
    await ops.decide(rid, Decide(action="exempt", reason="网关故障", corrects=first["id"]), "rev")
    view = await record_file(ops.db, ops.cfg, rid, clock.now())
    assert [c["state"] for c in view["corrections"]] == ["withdrawn"]
    pending = await ops.db.fetchone(
        "SELECT COUNT(*) FROM steps s JOIN obligations o ON o.id = s.obligation_id"
        " WHERE o.kind = 'correction' AND s.status = 'pending'"
    )
    assert pending[0] == 0


async def test_the_correction_clock_outlives_the_incident_and_reminds_the_head(
    ops: Ops, clock: FakeClock, db: Database
) -> None:
    """Decided while the incident is still active, then the incident closes: the
    correction's reminders are not cancelled with the incident's alerts, and they fire."""
    iid, rid = await breach_at(ops, clock, "2026-11-26T14:00:00+08:00", close=False)
    await ops.decide(
        rid,
        Decide(
            action="change",
            measure="correction",
            reason="延误且未说明原因",
            correction_required="说明原因并完善值班制度",
            correction_due_at=t("2026-12-10T17:00:00+08:00"),
        ),
        "rev",
    )
    await ops.close(iid, CloseIncident(reason="处置完毕"), "duty")
    assert await fire_due(ops) == 1  # the notice: a correction is asked of you
    clock.set(t("2026-12-09T17:00:00+08:00"))
    assert await fire_due(ops) == 1  # T-7d and T-1d, both due: one catch-up message
    told = await db.fetchall(
        "SELECT n.person_id, n.kind FROM notifications n JOIN obligations o"
        " ON o.id = n.obligation_id WHERE o.kind = 'correction' ORDER BY n.id"
    )
    assert [tuple(r) for r in told] == [("wang-fang", "notice"), ("wang-fang", "catch_up")]
    clock.set(t("2026-12-11T09:00:00+08:00"))
    assert await fire_due(ops) == 1  # the deadline passed: overdue, and repeated daily
    ob = await db.fetchone("SELECT status FROM obligations WHERE kind = 'correction'")
    assert ob[0] == "breached"
    assert (await db.fetchone("SELECT COUNT(*) FROM accountability_records"))[0] == 1
    nxt = await db.fetchone(
        "SELECT due_at FROM steps s JOIN obligations o ON o.id = s.obligation_id"
        " WHERE o.kind = 'correction' AND s.status = 'pending'"
    )
    assert nxt[0] == "2026-12-11T09:00:00.000000Z"  # 17:00 local, a day after the deadline
