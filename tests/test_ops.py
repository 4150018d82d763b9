"""The operations layer against a real SQLite file: what each operation stores, and that every
refusal raises the right error and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from responder.clock import FakeClock
from responder.config import Config
from responder.errors import BadInput, Conflict, NotFound
from responder.models import (
    ChangeLevel,
    CloseIncident,
    DeclareIncident,
    PressConferenceHeld,
    RecordRelease,
    ReschedulePressConference,
    SchedulePressConference,
)
from responder.obligations import breach
from responder.ops import Ops
from responder.store import Database
from responder.store.audit import verify
from responder.timeutil import CLOCK_SKEW, from_db, to_db

AR = "authoritative_release"
PC = "press_conference"
FU = "follow_up_release"


def t(text: str) -> datetime:
    """A time written as people write it here: local, +08:00."""
    return datetime.fromisoformat(text)


def db_t(text: str) -> str:
    stored = to_db(t(text))
    assert stored is not None
    return stored


def declaration(**kw: Any) -> DeclareIncident:
    data: dict[str, Any] = {
        "title": "某化工厂爆炸",
        "category": "accident",
        "level": "II",
        "occurred_at": "2026-11-26T08:00:00+08:00",
        "location": "江北新区",
        "lead_unit": "emergency",
        "co_units": ["health"],
    }
    data.update(kw)
    return DeclareIncident.model_validate(data)


async def obligations(db: Database, iid: str) -> dict[tuple[str, int], Any]:
    rows = await db.fetchall("SELECT * FROM obligations WHERE incident_id = ? ORDER BY id", (iid,))
    return {(r["kind"], r["seq"]): r for r in rows}


async def steps_of(db: Database, obligation_id: int, status: str | None = None) -> list[Any]:
    sql = "SELECT * FROM steps WHERE obligation_id = ?"
    params: list[Any] = [obligation_id]
    if status:
        sql += " AND status = ?"
        params.append(status)
    return await db.fetchall(sql + " ORDER BY due_at, id", params)


async def audit_actions(db: Database) -> list[tuple[str, str]]:
    rows = await db.fetchall("SELECT action, subject FROM audit_log ORDER BY seq")
    return [(r["action"], r["subject"]) for r in rows]


async def audit_ok(db: Database) -> int:
    verdict = await verify(db.reader)
    assert verdict.ok, verdict.problem
    return verdict.entries


async def records(db: Database, obligation_id: int) -> list[Any]:
    return await db.fetchall(
        "SELECT * FROM accountability_records WHERE obligation_id = ?", (obligation_id,)
    )


# -- declare ------------------------------------------------------------------------


async def test_declare_plans_obligations_and_steps(
    ops: Ops, db: Database, clock: FakeClock, ops_wakes: list[int]
) -> None:
    iid = await ops.declare(declaration(), "duty")
    assert iid == "INC-20261126-0001"
    inc = await db.fetchone("SELECT * FROM incidents WHERE id = ?", (iid,))
    assert inc is not None
    assert inc["rule_set_id"] == "gbf-2016-80"
    assert inc["level"] == "II" and inc["status"] == "active"
    assert inc["declared_at"] == to_db(clock.now())
    assert inc["occurred_at"] == db_t("2026-11-26T08:00:00+08:00")
    assert json.loads(inc["co_units"]) == ["health"]
    assert inc["declared_by"] == "duty" and inc["drill"] == 0

    obs = await obligations(db, iid)
    assert set(obs) == {(AR, 1), (PC, 1)}  # the follow-up starts with the first release
    ar, pc = obs[(AR, 1)], obs[(PC, 1)]
    assert ar["deadline"] == db_t("2026-11-26T13:00:00+08:00")
    assert pc["deadline"] == db_t("2026-11-27T08:00:00+08:00")
    for ob, within in ((ar, 5 * 3600), (pc, 24 * 3600)):
        assert ob["status"] == "open"
        assert ob["rule_set_id"] == "gbf-2016-80"
        assert ob["clock_start_kind"] == "occurred_at"
        assert ob["clock_start_at"] == db_t("2026-11-26T08:00:00+08:00")
        assert ob["within_s"] == within
        assert ob["level"] == "II"

    ar_steps = await steps_of(db, ar["id"])
    assert [(s["name"], s["due_at"], s["status"]) for s in ar_steps] == [
        ("declared", db_t("2026-11-26T09:00:00+08:00"), "pending"),
        ("T-2h", db_t("2026-11-26T11:00:00+08:00"), "pending"),
        ("T-1h", db_t("2026-11-26T12:00:00+08:00"), "pending"),
        ("T-30m", db_t("2026-11-26T12:30:00+08:00"), "pending"),
        ("deadline", db_t("2026-11-26T13:00:00+08:00"), "pending"),
    ]
    last = ar_steps[-1]
    assert last["is_deadline"] == 1 and last["repeat_s"] == 1800
    assert "head@#publicity" in json.loads(last["audience"])
    assert [s["name"] for s in await steps_of(db, pc["id"])] == [
        "declared",
        "T-2h",
        "T-1h",
        "T-30m",
        "deadline",
    ]

    assert await audit_actions(db) == [("incident.declared", iid)]
    entry = await db.fetchone("SELECT data FROM audit_log WHERE seq = 1")
    assert entry is not None
    data = json.loads(entry["data"])
    assert data["rule_set"] == "gbf-2016-80"
    assert {o["kind"] for o in data["obligations"]} == {AR, PC}
    assert await audit_ok(db) == 1
    assert await db.fetchall("SELECT * FROM accountability_records") == []
    assert ops_wakes == [1]

    second = await ops.declare(declaration(title="第二起"), "duty")
    assert second == "INC-20261126-0002"


async def test_late_declaration_collapses_into_one_catch_up(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    occurred = clock.now() - timedelta(hours=4, minutes=59, seconds=50)
    iid = await ops.declare(declaration(occurred_at=occurred), "duty")
    ar = (await obligations(db, iid))[(AR, 1)]
    assert ar["status"] == "open"
    steps = await steps_of(db, ar["id"])
    assert [(s["kind"], from_db(s["due_at"])) for s in steps] == [
        ("catch_up", clock.now()),
        ("deadline", clock.now() + timedelta(seconds=10)),
    ]
    catch_up, deadline = steps
    assert set(json.loads(catch_up["collapsed"])) == {"declared", "T-2h", "T-1h", "T-30m"}
    assert set(json.loads(catch_up["audience"])) == {
        "head@lead",
        "spokesperson@lead",
        "duty_officer@#office",
        "leader@#office",
    }
    assert catch_up["is_deadline"] == 0
    assert deadline["is_deadline"] == 1


async def test_declared_after_the_deadline_is_breached_at_once(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    occurred = clock.now() - timedelta(hours=6)
    iid = await ops.declare(declaration(occurred_at=occurred), "duty")
    obs = await obligations(db, iid)
    ar, pc = obs[(AR, 1)], obs[(PC, 1)]
    assert ar["status"] == "breached"
    assert ar["breached_at"] == ar["deadline"] == to_db(occurred + timedelta(hours=5))
    [rec] = await records(db, ar["id"])
    assert rec["incident_id"] == iid
    assert rec["unit"] == "emergency"
    assert rec["responsible_person"] == "wang-fang"  # the lead unit's head
    assert rec["deadline"] == ar["deadline"]
    assert rec["met_at"] is None and rec["status"] == "open"
    # one message now that carries the breach (and the repeats after it)
    [step] = await steps_of(db, ar["id"])
    assert step["kind"] == "catch_up" and step["is_deadline"] == 1 and step["repeat_s"] == 1800
    assert from_db(step["due_at"]) == clock.now()
    assert pc["status"] == "open" and await records(db, pc["id"]) == []


async def test_rule_set_in_force_when_it_occurred(ops: Ops, db: Database) -> None:
    iid = await ops.declare(declaration(occurred_at="2016-06-01T08:00:00+08:00"), "duty")
    inc = await db.fetchone("SELECT rule_set_id FROM incidents WHERE id = ?", (iid,))
    assert inc is not None and inc["rule_set_id"] == "js-2016-local"
    ar = (await obligations(db, iid))[(AR, 1)]
    assert ar["within_s"] == 6 * 3600 and ar["rule_set_id"] == "js-2016-local"
    assert ar["status"] == "breached"

    old = await ops.declare(declaration(occurred_at="2015-06-01T08:00:00+08:00"), "duty")
    inc = await db.fetchone("SELECT rule_set_id FROM incidents WHERE id = ?", (old,))
    assert inc is not None and inc["rule_set_id"] is None
    assert await obligations(db, old) == {}
    assert await audit_ok(db) == 2


async def test_level_iii_has_no_deadlines_and_drill_is_stored(ops: Ops, db: Database) -> None:
    iid = await ops.declare(declaration(level="III", drill=True), "duty")
    inc = await db.fetchone("SELECT * FROM incidents WHERE id = ?", (iid,))
    assert inc is not None
    assert inc["drill"] == 1 and inc["level"] == "III" and inc["rule_set_id"] == "gbf-2016-80"
    assert await obligations(db, iid) == {}
    assert await db.fetchall("SELECT * FROM steps") == []
    assert await audit_ok(db) == 1


async def test_learned_at_is_stored(ops: Ops, db: Database) -> None:
    iid = await ops.declare(declaration(learned_at="2026-11-26T08:20:00+08:00"), "duty")
    inc = await db.fetchone("SELECT learned_at FROM incidents WHERE id = ?", (iid,))
    assert inc is not None and inc["learned_at"] == db_t("2026-11-26T08:20:00+08:00")


# -- releases ------------------------------------------------------------------------


async def test_release_in_time_meets_and_starts_the_follow_up(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    iid = await ops.declare(declaration(), "duty")
    clock.set(t("2026-11-26T11:00:00+08:00"))
    result = await ops.record_release(
        iid,
        RecordRelease(
            published_at=t("2026-11-26T10:30:00+08:00"),
            channels=["政府网站", "微博"],
            url="https://example.gov.cn/1",
            checklist={"time_place": True, "what_happened": True},
        ),
        "duty",
    )
    assert result["met"] == [
        {"obligation": AR, "seq": 1, "status": "met", "recorded_late": False, "overrun_s": 0}
    ]
    assert result["recorded_late"] is False
    assert "measures" in result["checklist_missing"]

    obs = await obligations(db, iid)
    ar = obs[(AR, 1)]
    assert ar["status"] == "met"
    assert ar["met_at"] == db_t("2026-11-26T10:30:00+08:00")
    assert ar["met_recorded_at"] == db_t("2026-11-26T11:00:00+08:00")
    assert ar["recorded_late"] == 0
    assert await steps_of(db, ar["id"], "pending") == []
    assert {s["status"] for s in await steps_of(db, ar["id"])} == {"cancelled"}
    assert await steps_of(db, obs[(PC, 1)]["id"], "pending") != []  # untouched

    fu = obs[(FU, 1)]
    assert fu["status"] == "open"
    assert fu["clock_start_kind"] == "previous_release"
    assert fu["clock_start_at"] == db_t("2026-11-26T10:30:00+08:00")
    assert fu["deadline"] == db_t("2026-11-27T10:30:00+08:00")
    assert [s["name"] for s in await steps_of(db, fu["id"], "pending")] == ["T-2h", "deadline"]

    rel = await db.fetchone("SELECT * FROM releases WHERE incident_id = ?", (iid,))
    assert rel is not None
    assert rel["kind"] == "authoritative" and rel["recorded_late"] == 0
    assert json.loads(rel["channels"]) == ["政府网站", "微博"]
    assert await records(db, ar["id"]) == []
    assert await audit_actions(db) == [
        ("incident.declared", iid),
        ("release.authoritative", iid),
    ]
    assert await audit_ok(db) == 2

    # a follow-up release meets follow-up 1 and starts follow-up 2 from its own time
    clock.set(t("2026-11-27T09:00:00+08:00"))
    result = await ops.record_release(
        iid, RecordRelease(published_at=t("2026-11-27T08:45:00+08:00")), "duty", kind="follow_up"
    )
    assert [(m["obligation"], m["seq"], m["status"]) for m in result["met"]] == [(FU, 1, "met")]
    obs = await obligations(db, iid)
    assert obs[(FU, 2)]["deadline"] == db_t("2026-11-28T08:45:00+08:00")
    assert obs[(FU, 2)]["status"] == "open"
    assert await audit_ok(db) == 3


async def test_release_dated_in_time_but_recorded_late(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    iid = await ops.declare(declaration(), "duty")
    clock.set(t("2026-11-26T13:30:00+08:00"))
    result = await ops.record_release(
        iid, RecordRelease(published_at=t("2026-11-26T12:50:00+08:00")), "duty"
    )
    assert result["recorded_late"] is True
    assert result["met"][0]["status"] == "met" and result["met"][0]["recorded_late"] is True
    ar = (await obligations(db, iid))[(AR, 1)]
    assert ar["status"] == "met" and ar["recorded_late"] == 1
    assert ar["met_at"] == db_t("2026-11-26T12:50:00+08:00")
    rel = await db.fetchone("SELECT recorded_late FROM releases WHERE incident_id = ?", (iid,))
    assert rel is not None and rel["recorded_late"] == 1
    assert await steps_of(db, ar["id"], "pending") == []


async def test_recorded_late_after_the_scheduler_breached_it(
    ops: Ops, db: Database, cfg: Config, clock: FakeClock
) -> None:
    """The deadline step already fired (breach + record); then the release turns out to have
    gone out in time: met, flagged recorded_late, and the record shows no overrun."""
    iid = await ops.declare(declaration(), "duty")
    ar = (await obligations(db, iid))[(AR, 1)]
    clock.set(t("2026-11-26T13:00:00+08:00"))
    # What the scheduler does when the deadline step fires:
    assert await db.transact(lambda tx: breach(tx, cfg, ar["id"], clock.now())) is not None
    clock.set(t("2026-11-26T13:30:00+08:00"))
    result = await ops.record_release(
        iid, RecordRelease(published_at=t("2026-11-26T12:50:00+08:00")), "duty"
    )
    assert result["met"][0]["status"] == "met" and result["recorded_late"] is True
    ar = (await obligations(db, iid))[(AR, 1)]
    assert ar["status"] == "met" and ar["recorded_late"] == 1
    [rec] = await records(db, ar["id"])
    assert rec["met_at"] == db_t("2026-11-26T12:50:00+08:00")
    assert rec["overrun_s"] == 0
    assert json.loads(rec["evidence"])["recorded_late"] is True


async def test_release_after_the_deadline_stays_breached(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    iid = await ops.declare(declaration(), "duty")
    clock.set(t("2026-11-26T14:00:00+08:00"))
    result = await ops.record_release(
        iid, RecordRelease(published_at=t("2026-11-26T13:20:00+08:00")), "duty"
    )
    assert result["met"] == [
        {
            "obligation": AR,
            "seq": 1,
            "status": "breached",
            "recorded_late": False,
            "overrun_s": 1200,
        }
    ]
    obs = await obligations(db, iid)
    ar = obs[(AR, 1)]
    assert ar["status"] == "breached"
    assert ar["met_at"] == db_t("2026-11-26T13:20:00+08:00")
    assert ar["breached_at"] == ar["deadline"]
    [rec] = await records(db, ar["id"])
    assert rec["met_at"] == db_t("2026-11-26T13:20:00+08:00")
    assert rec["overrun_s"] == 1200
    assert await steps_of(db, ar["id"], "pending") == []
    assert obs[(FU, 1)]["deadline"] == db_t("2026-11-27T13:20:00+08:00")
    assert await audit_ok(db) == 2


# -- press conference ------------------------------------------------------------------


async def test_press_conference_schedule_reschedule_held(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    iid = await ops.declare(declaration(), "duty")
    r = await ops.schedule_press_conference(
        iid,
        SchedulePressConference(
            scheduled_at=t("2026-11-26T15:00:00+08:00"),
            venue="区政府新闻发布厅",
            spokesperson="李强",
        ),
        "duty",
    )
    pc_id = r["id"]
    assert r["after_deadline"] is False
    row = await db.fetchone("SELECT * FROM press_conferences WHERE id = ?", (pc_id,))
    assert row is not None
    assert row["status"] == "scheduled"
    assert row["scheduled_at"] == db_t("2026-11-26T15:00:00+08:00")
    assert row["venue"] == "区政府新闻发布厅" and row["spokesperson"] == "李强"

    r = await ops.reschedule_press_conference(
        iid,
        pc_id,
        ReschedulePressConference(scheduled_at=t("2026-11-27T09:00:00+08:00"), reason="领导到场"),
        "duty",
    )
    assert r["after_deadline"] is True  # the deadline is 2026-11-27 08:00
    row = await db.fetchone("SELECT * FROM press_conferences WHERE id = ?", (pc_id,))
    assert row is not None
    assert row["scheduled_at"] == db_t("2026-11-27T09:00:00+08:00")
    assert row["venue"] == "区政府新闻发布厅"  # kept when not given

    clock.set(t("2026-11-26T17:00:00+08:00"))
    r = await ops.press_conference_held(
        iid,
        PressConferenceHeld(
            held_at=t("2026-11-26T16:00:00+08:00"), principal_leader_spoke=True, notes="区长出席"
        ),
        "duty",
        pc_id=pc_id,
    )
    assert r["id"] == pc_id
    assert r["met"][0]["obligation"] == PC and r["met"][0]["status"] == "met"
    row = await db.fetchone("SELECT * FROM press_conferences WHERE id = ?", (pc_id,))
    assert row is not None
    assert row["status"] == "held"
    assert row["held_at"] == db_t("2026-11-26T16:00:00+08:00")
    assert row["principal_leader_spoke"] == 1
    assert row["notes"] == "区长出席"
    assert row["venue"] == "区政府新闻发布厅"  # an empty venue on "held" keeps the planned one
    pc = (await obligations(db, iid))[(PC, 1)]
    assert pc["status"] == "met" and pc["met_at"] == db_t("2026-11-26T16:00:00+08:00")
    assert await steps_of(db, pc["id"], "pending") == []
    assert [a for a, _ in await audit_actions(db)] == [
        "incident.declared",
        "press_conference.scheduled",
        "press_conference.rescheduled",
        "press_conference.held",
    ]
    assert await audit_ok(db) == 4


async def test_press_conference_held_without_schedule(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    iid = await ops.declare(declaration(), "duty")
    clock.set(t("2026-11-27T10:00:00+08:00"))
    r = await ops.press_conference_held(
        iid,
        PressConferenceHeld(held_at=t("2026-11-27T07:30:00+08:00"), principal_leader_spoke=False),
        "duty",
    )
    assert r["recorded_late"] is True
    row = await db.fetchone("SELECT * FROM press_conferences WHERE id = ?", (r["id"],))
    assert row is not None
    assert row["status"] == "held" and row["principal_leader_spoke"] == 0
    assert row["recorded_late"] == 1
    pc = (await obligations(db, iid))[(PC, 1)]
    assert pc["status"] == "met" and pc["recorded_late"] == 1


# -- level changes and closing ----------------------------------------------------------


async def test_lowering_waives_and_raising_adds_back(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    iid = await ops.declare(declaration(), "duty")
    clock.advance(timedelta(minutes=30))
    result = await ops.change_level(iid, ChangeLevel(level="III", reason="核实后伤亡较少"), "duty")
    assert result["from"] == "II" and result["to"] == "III"
    assert sorted(result["waived"]) == [AR, PC] and result["added"] == []
    obs = await obligations(db, iid)
    for key in ((AR, 1), (PC, 1)):
        ob = obs[key]
        assert ob["status"] == "waived"
        assert ob["waived_at"] == to_db(clock.now())
        assert "核实后伤亡较少" in ob["waived_reason"]
        assert "II" in ob["waived_reason"] and "III" in ob["waived_reason"]
        steps = await steps_of(db, ob["id"])
        assert {s["status"] for s in steps} == {"cancelled"}
        assert {s["cancelled_at"] for s in steps} == {to_db(clock.now())}
    inc = await db.fetchone("SELECT level FROM incidents WHERE id = ?", (iid,))
    assert inc is not None and inc["level"] == "III"

    clock.advance(timedelta(hours=1))
    result = await ops.change_level(iid, ChangeLevel(level="II", reason="死亡人数上升"), "duty")
    assert sorted(result["added"]) == [AR, PC] and result["waived"] == []
    assert result["breached"] == []
    rows = await db.fetchall("SELECT * FROM obligations WHERE incident_id = ? ORDER BY id", (iid,))
    assert [(r["kind"], r["seq"], r["status"]) for r in rows] == [
        (AR, 1, "waived"),
        (PC, 1, "waived"),
        (AR, 2, "open"),
        (PC, 2, "open"),
    ]
    # Raised back: the duties come back with the deadlines they had (08:00 + 5 h / 24 h), not
    # counted afresh from the raise — lowering and raising again moves no deadline.
    for old, new in ((rows[0], rows[2]), (rows[1], rows[3])):
        for column in ("clock_start_kind", "clock_start_at", "deadline"):
            assert new[column] == old[column]
        assert new["clock_start_kind"] == "occurred_at"
        assert new["level"] == "II"
        pending = await steps_of(db, new["id"], "pending")
        assert [s["name"] for s in pending][-1] == "deadline"
        assert pending[0]["due_at"] == to_db(clock.now())  # the people hear of it at once

    changes = await db.fetchall(
        "SELECT from_level, to_level, reason FROM level_changes WHERE incident_id = ? ORDER BY id",
        (iid,),
    )
    assert [tuple(c) for c in changes] == [
        ("II", "III", "核实后伤亡较少"),
        ("III", "II", "死亡人数上升"),
    ]
    assert [a for a, _ in await audit_actions(db)] == [
        "incident.declared",
        "incident.level_changed",
        "incident.level_changed",
    ]
    assert await audit_ok(db) == 3


async def test_lowering_after_a_deadline_does_not_waive_the_breach(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    """The 5 h deadline passed (the scheduler has not fired yet, or was down): lowering the
    level must record the breach, not waive it."""
    iid = await ops.declare(declaration(), "duty")
    clock.set(t("2026-11-26T14:00:00+08:00"))
    result = await ops.change_level(iid, ChangeLevel(level="III", reason="降级"), "duty")
    assert result["waived"] == [PC]
    obs = await obligations(db, iid)
    ar = obs[(AR, 1)]
    assert ar["status"] == "breached" and ar["waived_reason"] is None
    assert len(await records(db, ar["id"])) == 1
    assert obs[(PC, 1)]["status"] == "waived"
    # raising again does not restart an obligation that was breached
    result = await ops.change_level(iid, ChangeLevel(level="II", reason="升级"), "duty")
    assert result["added"] == [PC]
    assert await audit_ok(db) == 3


async def test_raising_a_level_iii_incident(ops: Ops, db: Database, clock: FakeClock) -> None:
    iid = await ops.declare(declaration(level="III"), "duty")
    clock.advance(timedelta(hours=2))
    result = await ops.change_level(iid, ChangeLevel(level="I", reason="升级"), "duty")
    assert sorted(result["added"]) == [AR, PC]
    ar = (await obligations(db, iid))[(AR, 1)]
    assert ar["deadline"] == to_db(clock.now() + timedelta(hours=5))
    assert ar["level"] == "I"


async def test_raised_after_a_release_can_be_met_by_a_new_release(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    """Released while level III, then raised to II: the raise starts a new 5 h clock, and the
    release that meets it must be recordable (else it could only end in a breach)."""
    iid = await ops.declare(declaration(level="III"), "duty")
    await ops.record_release(iid, RecordRelease(published_at=clock.now()), "duty")
    clock.advance(timedelta(hours=1))
    await ops.change_level(iid, ChangeLevel(level="II", reason="升级"), "duty")
    clock.advance(timedelta(hours=1))
    result = await ops.record_release(iid, RecordRelease(published_at=clock.now()), "duty")
    assert [(m["obligation"], m["status"]) for m in result["met"]] == [(AR, "met")]
    obs = await obligations(db, iid)
    assert obs[(AR, 1)]["status"] == "met"
    assert obs[(FU, 1)]["deadline"] == to_db(clock.now() + timedelta(hours=24))
    # and once met, a further authoritative release is refused again
    with pytest.raises(Conflict) as e:
        await ops.record_release(iid, RecordRelease(published_at=clock.now()), "duty")
    assert e.value.code == "already_released"
    assert await audit_ok(db) == 4


async def test_close_waives_breaches_and_cancels(ops: Ops, db: Database, clock: FakeClock) -> None:
    iid = await ops.declare(declaration(), "duty")
    clock.set(t("2026-11-26T14:00:00+08:00"))
    result = await ops.close(iid, CloseIncident(reason="处置完毕"), "duty")
    assert result == {"waived": [PC], "breached": [AR]}
    obs = await obligations(db, iid)
    assert obs[(AR, 1)]["status"] == "breached"
    assert len(await records(db, obs[(AR, 1)]["id"])) == 1
    assert obs[(PC, 1)]["status"] == "waived"
    assert "处置完毕" in obs[(PC, 1)]["waived_reason"]
    assert await db.fetchall("SELECT * FROM steps WHERE status = 'pending'") == []
    inc = await db.fetchone("SELECT * FROM incidents WHERE id = ?", (iid,))
    assert inc is not None
    assert inc["status"] == "closed" and inc["close_reason"] == "处置完毕"
    assert inc["closed_at"] == to_db(clock.now())
    assert await audit_ok(db) == 2


async def test_met_obligations_survive_close(ops: Ops, db: Database, clock: FakeClock) -> None:
    iid = await ops.declare(declaration(), "duty")
    clock.set(t("2026-11-26T10:00:00+08:00"))
    await ops.record_release(iid, RecordRelease(published_at=clock.now()), "duty")
    await ops.close(iid, CloseIncident(reason="处置完毕"), "duty")
    obs = await obligations(db, iid)
    assert obs[(AR, 1)]["status"] == "met"
    assert obs[(FU, 1)]["status"] == "waived"


# -- bad input: the right error, and nothing changes ---------------------------------

Action = Callable[[Ops, str, FakeClock], Awaitable[Any]]
NAIVE = datetime(2026, 11, 26, 8, 0)
UNKNOWN = "INC-20991231-0001"


async def _close(ops: Ops, iid: str, clock: FakeClock) -> None:
    await ops.close(iid, CloseIncident(reason="结束"), "duty")


async def _release(ops: Ops, iid: str, clock: FakeClock) -> None:
    await ops.record_release(iid, RecordRelease(published_at=clock.now()), "duty")


async def _schedule(ops: Ops, iid: str, clock: FakeClock) -> None:
    await ops.schedule_press_conference(
        iid, SchedulePressConference(scheduled_at=t("2026-11-26T15:00:00+08:00")), "duty"
    )


async def _held(ops: Ops, iid: str, clock: FakeClock) -> None:
    await _schedule(ops, iid, clock)
    await ops.press_conference_held(
        iid, PressConferenceHeld(held_at=clock.now(), principal_leader_spoke=True), "duty", pc_id=1
    )


def _declare(**kw: Any) -> Action:
    async def run(ops: Ops, iid: str, clock: FakeClock) -> Any:
        return await ops.declare(declaration(**kw), "duty")

    return run


def _declare_raw(**kw: Any) -> Action:
    """Build the model inside the action (the model itself may refuse)."""

    async def run(ops: Ops, iid: str, clock: FakeClock) -> Any:
        data: dict[str, Any] = {
            "title": "x",
            "category": "accident",
            "level": "II",
            "occurred_at": t("2026-11-26T08:00:00+08:00"),
            "lead_unit": "emergency",
        }
        data.update(kw)
        return await ops.declare(DeclareIncident(**data), "duty")

    return run


def _on(
    what: str, *, incident: str | None = None, when: Callable[[FakeClock], Any] | None = None
) -> Action:
    """An operation on the incident (or on ``incident``), at ``when(clock)``."""

    async def run(ops: Ops, iid: str, clock: FakeClock) -> Any:
        target = incident or iid
        at = when(clock) if when else clock.now()
        if what == "release":
            return await ops.record_release(target, RecordRelease(published_at=at), "duty")
        if what == "follow_up":
            return await ops.record_release(
                target, RecordRelease(published_at=at), "duty", kind="follow_up"
            )
        if what == "schedule":
            return await ops.schedule_press_conference(
                target, SchedulePressConference(scheduled_at=at), "duty"
            )
        if what == "reschedule":
            return await ops.reschedule_press_conference(
                target, 1, ReschedulePressConference(scheduled_at=at, reason="改期"), "duty"
            )
        if what == "held":
            return await ops.press_conference_held(
                target, PressConferenceHeld(held_at=at, principal_leader_spoke=True), "duty"
            )
        if what == "held_pc":
            return await ops.press_conference_held(
                target,
                PressConferenceHeld(held_at=at, principal_leader_spoke=True),
                "duty",
                pc_id=1,
            )
        if what == "level":
            return await ops.change_level(target, ChangeLevel(level="I", reason="升级"), "duty")
        if what == "close":
            return await ops.close(target, CloseIncident(reason="结束"), "duty")
        raise AssertionError(what)

    return run


async def test_a_client_clock_a_little_fast_is_taken_as_now(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    """An integration declaring "it happened now" from a clock running fast used to be refused
    at the one moment it matters.  Up to CLOCK_SKEW ahead is taken as the service's now (it
    cannot have happened later; deadlines count from our clock) and the audit entry keeps what
    was given; further ahead is still refused (test_bad_input_changes_nothing)."""
    clock.advance(timedelta(hours=2, microseconds=250_000))
    now = clock.now().replace(microsecond=0)
    ahead = clock.now() + CLOCK_SKEW  # the furthest still taken as now
    iid = await ops.declare(declaration(occurred_at=ahead.isoformat()), "duty")
    inc = await db.fetchone("SELECT occurred_at FROM incidents WHERE id = ?", (iid,))
    assert inc is not None and inc["occurred_at"] == to_db(now)
    obs = await obligations(db, iid)
    assert obs[(AR, 1)]["deadline"] == to_db(now + timedelta(hours=5))
    declared = await db.fetchone(
        "SELECT data FROM audit_log WHERE action = 'incident.declared' AND subject = ?", (iid,)
    )
    assert declared is not None
    assert json.loads(declared[0])["given_ahead_of_the_clock"] == {"occurred_at": ahead.isoformat()}

    clock.advance(timedelta(minutes=20))
    result = await ops.record_release(
        iid, RecordRelease(published_at=clock.now() + timedelta(seconds=40)), "duty"
    )
    assert result["met"]
    release = await db.fetchone("SELECT published_at FROM releases WHERE incident_id = ?", (iid,))
    assert release is not None and release[0] == to_db(clock.now().replace(microsecond=0))
    assert (await obligations(db, iid))[(AR, 1)]["met_at"] == to_db(
        clock.now().replace(microsecond=0)
    )
    assert await audit_ok(db)


def _before_occurrence(c: FakeClock) -> datetime:
    return t("2026-11-26T07:59:59+08:00")


def _future(c: FakeClock) -> datetime:
    """Beyond what a client's clock running fast may give (that is taken as now)."""
    return c.now() + CLOCK_SKEW + timedelta(seconds=1)


async def _change(ops: Ops, iid: str, clock: FakeClock, **kw: Any) -> Any:
    return await ops.change_level(iid, ChangeLevel(**kw), "duty")


BAD: dict[str, tuple[Action | None, Action, type[Exception], str | None]] = {
    # (setup, action, error, code)
    "naive occurred_at": (None, _declare_raw(occurred_at=NAIVE), ValidationError, None),
    "naive occurred_at text": (
        None,
        _declare_raw(occurred_at="2026-11-26T08:00:00"),
        ValidationError,
        None,
    ),
    "naive learned_at": (None, _declare_raw(learned_at=NAIVE), ValidationError, None),
    "naive published_at": (
        None,
        lambda o, i, c: o.record_release(i, RecordRelease(published_at=NAIVE), "duty"),
        ValidationError,
        None,
    ),
    "naive held_at": (
        None,
        lambda o, i, c: o.press_conference_held(
            i, PressConferenceHeld(held_at=NAIVE, principal_leader_spoke=True), "duty"
        ),
        ValidationError,
        None,
    ),
    "naive scheduled_at": (
        None,
        lambda o, i, c: o.schedule_press_conference(
            i, SchedulePressConference(scheduled_at=NAIVE), "duty"
        ),
        ValidationError,
        None,
    ),
    "occurred_at in the future": (
        None,
        lambda o, i, c: o.declare(declaration(occurred_at=_future(c)), "duty"),
        BadInput,
        "time_in_future",
    ),
    "learned_at in the future": (
        None,
        lambda o, i, c: o.declare(declaration(learned_at=_future(c)), "duty"),
        BadInput,
        "time_in_future",
    ),
    "learned_at before occurred_at": (
        None,
        _declare(learned_at="2026-11-26T07:00:00+08:00"),
        BadInput,
        "learned_before_occurred",
    ),
    "unknown lead unit": (None, _declare(lead_unit="fire-brigade"), BadInput, "unknown_unit"),
    "unknown co-unit": (None, _declare(co_units=["health", "nope"]), BadInput, "unknown_unit"),
    "unknown level": (None, _declare_raw(level="V"), ValidationError, None),
    "unknown category": (None, _declare_raw(category="flood"), ValidationError, None),
    "unknown field": (None, _declare_raw(severity="high"), ValidationError, None),
    "empty title": (None, _declare_raw(title="   "), ValidationError, None),
    "release before occurrence": (
        None,
        _on("release", when=_before_occurrence),
        BadInput,
        "before_occurrence",
    ),
    "release in the future": (None, _on("release", when=_future), BadInput, "time_in_future"),
    "follow-up in the future": (None, _on("follow_up", when=_future), BadInput, "time_in_future"),
    "held before occurrence": (
        None,
        _on("held", when=_before_occurrence),
        BadInput,
        "before_occurrence",
    ),
    "held in the future": (None, _on("held", when=_future), BadInput, "time_in_future"),
    "scheduled before occurrence": (
        None,
        _on("schedule", when=_before_occurrence),
        BadInput,
        "before_occurrence",
    ),
    "rescheduled before occurrence": (
        _schedule,
        _on("reschedule", when=_before_occurrence),
        BadInput,
        "before_occurrence",
    ),
    "scheduled twice": (_schedule, _on("schedule"), Conflict, "already_scheduled"),
    "reschedule unknown press conference": (
        None,
        _on("reschedule"),
        NotFound,
        "press_conference_not_found",
    ),
    "held twice": (_held, _on("held_pc"), Conflict, "already_held"),
    "reschedule a held one": (_held, _on("reschedule"), Conflict, "not_scheduled"),
    "level change without reason": (
        None,
        lambda o, i, c: _change(o, i, c, level="III"),
        ValidationError,
        None,
    ),
    "level change with a blank reason": (
        None,
        lambda o, i, c: _change(o, i, c, level="III", reason="  "),
        ValidationError,
        None,
    ),
    "unknown level in a change": (
        None,
        lambda o, i, c: _change(o, i, c, level="0", reason="x"),
        ValidationError,
        None,
    ),
    "change to the same level": (
        None,
        lambda o, i, c: _change(o, i, c, level="II", reason="x"),
        BadInput,
        "same_level",
    ),
    "second authoritative release": (_release, _on("release"), Conflict, "already_released"),
    "follow-up before the authoritative release": (
        None,
        _on("follow_up"),
        Conflict,
        "release_not_recorded",
    ),
    "press conference scheduled in the past": (
        None,
        lambda o, i, c: o.schedule_press_conference(
            i, SchedulePressConference(scheduled_at=c.now() - timedelta(minutes=1)), "duty"
        ),
        BadInput,
        "scheduled_in_past",
    ),
    "close without reason": (
        None,
        lambda o, i, c: o.close(i, CloseIncident(reason=""), "duty"),
        ValidationError,
        None,
    ),
    **{
        f"{what} on a closed incident": (_close, _on(what), Conflict, "incident_closed")
        for what in ("release", "follow_up", "schedule", "reschedule", "held", "level", "close")
    },
    **{
        f"{what} on an unknown incident": (
            None,
            _on(what, incident=UNKNOWN),
            NotFound,
            "incident_not_found",
        )
        for what in ("release", "follow_up", "schedule", "reschedule", "held", "level", "close")
    },
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_input_changes_nothing(
    case: str,
    ops: Ops,
    db: Database,
    clock: FakeClock,
    ops_wakes: list[int],
    dump_tables: Callable[[Database], Awaitable[dict[str, list[Any]]]],
) -> None:
    setup, action, error, code = BAD[case]
    iid = await ops.declare(declaration(), "duty")
    clock.advance(timedelta(minutes=10))
    if setup is not None:
        await setup(ops, iid, clock)
    clock.advance(timedelta(minutes=10))
    before = await dump_tables(db)
    wakes = len(ops_wakes)
    with pytest.raises(error) as info:
        await action(ops, iid, clock)
    if code is not None:
        assert info.value.code == code  # type: ignore[attr-defined]
        assert info.value.zh and info.value.en  # type: ignore[attr-defined]
    assert await dump_tables(db) == before
    assert len(ops_wakes) == wakes
    await audit_ok(db)


async def test_lowering_stops_the_repeats_of_a_breached_obligation(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    """The breach stays on record; the lower level no longer asks for the duty, so no repeats."""
    iid = await ops.declare(declaration(level="II"), "duty")
    ar_id = (await obligations(db, iid))[(AR, 1)]["id"]
    clock.advance(timedelta(hours=6))
    result = await ops.change_level(iid, ChangeLevel(level="III", reason="降级"), "duty")
    assert result["breached"] == [AR]
    assert (await obligations(db, iid))[(AR, 1)]["status"] == "breached"
    assert await steps_of(db, ar_id, "pending") == []
    assert len(await records(db, ar_id)) == 1


async def test_raising_back_resumes_the_follow_up_clock(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    """Released, lowered (the follow-up is waived), raised again: continuous release resumes,
    counted from the last release as before the lowering."""
    iid = await ops.declare(declaration(level="II"), "duty")
    released = clock.now()
    await ops.record_release(iid, RecordRelease(published_at=released), "duty")
    clock.advance(timedelta(hours=1))
    await ops.change_level(iid, ChangeLevel(level="III", reason="降级"), "duty")
    assert (await obligations(db, iid))[(FU, 1)]["status"] == "waived"
    clock.advance(timedelta(hours=1))
    result = await ops.change_level(iid, ChangeLevel(level="II", reason="再次升级"), "duty")
    assert FU in result["added"] and result["breached"] == []
    fu = (await obligations(db, iid))[(FU, 2)]
    assert fu["status"] == "open"
    assert fu["clock_start_kind"] == "previous_release"
    assert fu["deadline"] == to_db(released + timedelta(hours=24))
    assert await audit_ok(db) >= 4


async def test_raising_back_after_the_deadline_is_a_breach(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    """Lowered before the 5-hour deadline, raised back after it: the release is overdue — the
    duty is breached at once and goes to the reviewers, instead of getting five new hours."""
    iid = await ops.declare(declaration(level="II"), "duty")  # occurred 08:00, deadline 13:00
    clock.advance(timedelta(hours=1))
    await ops.change_level(iid, ChangeLevel(level="III", reason="核实后降级"), "duty")
    clock.advance(timedelta(hours=5))  # 15:00
    result = await ops.change_level(iid, ChangeLevel(level="II", reason="再次升级"), "duty")
    assert result["breached"] == [AR] and sorted(result["added"]) == [AR, PC]
    obs = await obligations(db, iid)
    ar = obs[(AR, 2)]
    assert ar["status"] == "breached" and ar["deadline"] == obs[(AR, 1)]["deadline"]
    assert ar["breached_at"] == ar["deadline"]  # missed at 13:00, not when it was raised
    assert len(await records(db, ar["id"])) == 1
    # Its people hear of the breach now (one catch-up step due at once), then the repeats.
    pending = await steps_of(db, ar["id"], "pending")
    assert pending[0]["due_at"] == to_db(clock.now())
    assert obs[(PC, 2)]["status"] == "open"
    assert await audit_ok(db) == 3


async def test_a_first_raise_still_counts_from_the_raise(
    ops: Ops, db: Database, clock: FakeClock
) -> None:
    """Declared III, raised to II (the duty starts then), lowered, raised again: back on the
    clock of the first raise."""
    iid = await ops.declare(declaration(level="III"), "duty")
    clock.advance(timedelta(hours=1))
    first_raise = clock.now()
    await ops.change_level(iid, ChangeLevel(level="II", reason="升级"), "duty")
    clock.advance(timedelta(hours=1))
    await ops.change_level(iid, ChangeLevel(level="III", reason="降级"), "duty")
    clock.advance(timedelta(hours=1))
    await ops.change_level(iid, ChangeLevel(level="II", reason="再次升级"), "duty")
    ar = (await obligations(db, iid))[(AR, 2)]
    assert ar["clock_start_kind"] == "level_changed_at"
    assert ar["clock_start_at"] == to_db(first_raise)
    assert ar["deadline"] == to_db(first_raise + timedelta(hours=5))
