"""Writing the planner's answer into the store, and the few changes every path shares:
cancelling an obligation's pending steps and opening an accountability record.

Every function here runs inside the caller's write transaction.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from responder.audience import responsible_person
from responder.config import Config
from responder.policy.planner import Plan, PlannedObligation, PlannedStep
from responder.timeutil import from_db, to_db


def insert_obligation(
    tx: sqlite3.Connection,
    incident_id: str,
    rule_set_id: str,
    ob: PlannedObligation,
    now: datetime,
) -> int:
    cur = tx.execute(
        "INSERT INTO obligations (incident_id, kind, seq, name, name_en, milestone, level,"
        " rule_set_id, clock_start_kind, clock_start_at, within_s, deadline, status,"
        " breached_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            incident_id,
            ob.kind,
            ob.seq,
            ob.name,
            ob.name_en,
            ob.milestone,
            ob.level,
            rule_set_id,
            ob.clock_start_kind,
            to_db(ob.clock_start_at),
            int(ob.within.total_seconds()),
            to_db(ob.deadline),
            "open",  # a deadline already past is breached by its (due) deadline step firing
            None,
            to_db(now),
        ),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def _step_row(incident_id: str, obligation_id: int, s: PlannedStep) -> tuple[object, ...]:
    return (
        incident_id,
        obligation_id,
        s.name,
        s.kind,
        to_db(s.nominal_at),
        to_db(s.due_at),
        json.dumps(list(s.audience)),
        json.dumps(list(s.channels)),
        int(s.is_deadline),
        int(s.repeat_every.total_seconds()) if s.repeat_every else None,
        json.dumps(list(s.collapsed), ensure_ascii=False),
        int(s.all_channels),
    )


_INSERT_STEP = (
    "INSERT INTO steps (incident_id, obligation_id, name, kind, nominal_at, due_at, audience,"
    " channels, is_deadline, repeat_s, collapsed, all_channels) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)


def insert_step(
    tx: sqlite3.Connection, incident_id: str, obligation_id: int, s: PlannedStep
) -> int:
    cur = tx.execute(_INSERT_STEP, _step_row(incident_id, obligation_id, s))
    assert cur.lastrowid is not None
    return cur.lastrowid


def insert_plan(
    tx: sqlite3.Connection, incident_id: str, rule_set_id: str, plan: Plan, now: datetime
) -> list[int]:
    """Store obligations and their steps; return the new obligation ids in plan order."""
    ids: dict[tuple[str, int], int] = {}
    for ob in plan.obligations:
        ids[(ob.kind, ob.seq)] = insert_obligation(tx, incident_id, rule_set_id, ob, now)
    tx.executemany(  # one round trip for all of a declaration's steps
        _INSERT_STEP,
        [_step_row(incident_id, ids[(s.obligation_kind, s.obligation_seq)], s) for s in plan.steps],
    )
    return list(ids.values())


def cancel_steps(tx: sqlite3.Connection, obligation_id: int, now: datetime) -> int:
    cur = tx.execute(
        "UPDATE steps SET status = 'cancelled', cancelled_at = ?"
        " WHERE obligation_id = ? AND status = 'pending'",
        (to_db(now), obligation_id),
    )
    return cur.rowcount


def cancel_queued_notifications(tx: sqlite3.Connection, obligation_id: int, now: datetime) -> int:
    """A met or waived obligation needs no more messages: drop those not yet handed to a channel."""
    cur = tx.execute(
        "UPDATE notifications SET status = 'cancelled', last_error = 'obligation closed'"
        " WHERE obligation_id = ? AND status = 'queued' AND kind != 'watchdog'",
        (obligation_id,),
    )
    return cur.rowcount


def breach(tx: sqlite3.Connection, cfg: Config, obligation_id: int, at: datetime) -> int | None:
    """Mark an open obligation breached at its deadline and open its accountability record.

    Conditional on ``status = 'open'``: whoever gets here first (the scheduler firing the
    deadline step, or a milestone recorded after the deadline) does it, exactly once.
    Returns the accountability record's id, or None when the obligation was not open.
    """
    cur = tx.execute(
        "UPDATE obligations SET status = 'breached', breached_at = deadline"
        " WHERE id = ? AND status = 'open'",
        (obligation_id,),
    )
    if cur.rowcount == 0:
        return None
    c = tx.execute(
        "SELECT o.incident_id, o.deadline, o.kind, o.name, i.lead_unit"
        " FROM obligations o JOIN incidents i ON i.id = o.incident_id WHERE o.id = ?",
        (obligation_id,),
    )
    row = c.fetchone()
    assert row is not None
    head = responsible_person(cfg, row["lead_unit"])
    evidence = {"obligation": row["kind"], "obligation_name": row["name"]}
    cur = tx.execute(
        "INSERT INTO accountability_records (incident_id, obligation_id, unit, responsible_person,"
        " deadline, breached_at, evidence, created_at) VALUES (?,?,?,?,?,?,?,?)",
        (
            row["incident_id"],
            obligation_id,
            row["lead_unit"],
            head.id if head else None,
            row["deadline"],
            row["deadline"],
            json.dumps(evidence, ensure_ascii=False),
            to_db(at),
        ),
    )
    return cur.lastrowid


def settle_accountability(
    tx: sqlite3.Connection, obligation_id: int, met_at: datetime, recorded_late: bool
) -> None:
    """A breached obligation was met after all: record when, and by how much it overran."""
    c = tx.execute(
        "SELECT id, deadline, evidence FROM accountability_records WHERE obligation_id = ?",
        (obligation_id,),
    )
    row = c.fetchone()
    if row is None:
        return
    deadline = from_db(row["deadline"])
    assert deadline is not None
    evidence = json.loads(row["evidence"])
    if recorded_late:
        evidence["recorded_late"] = True
    tx.execute(
        "UPDATE accountability_records SET met_at = ?, overrun_s = ?, evidence = ? WHERE id = ?",
        (
            to_db(met_at),
            # Met in time but recorded after the scheduler breached it: no overrun, not negative.
            max(0, int((met_at - deadline).total_seconds())),
            json.dumps(evidence, ensure_ascii=False),
            row["id"],
        ),
    )
