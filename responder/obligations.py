"""An obligation's whole life, in one place: planned, met, breached, waived, raised back,
repeated, settled.

This module is the only writer of the ``obligations``, ``steps`` and ``accountability_records``
tables.  The planner (:mod:`responder.policy.planner`) decides *what* the obligations and their
steps are; the functions here store those decisions and move an obligation from one state to
the next::

    open ──met in time──────────────────────────▶ met
      │ ──deadline step fires / recorded late──▶ breached ──met after all──▶ breached + met_at
      │                                            └─ accountability record opened, then settled
      └──lowered / closed─────────────────────▶ waived ──raised back──▶ a new open one (old clock)

Every function runs inside the caller's write transaction (a plain function of a
``sqlite3.Connection``), so a change, its timers and its audit entry commit together.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from responder.audience import responsible_person
from responder.config import Config
from responder.policy.planner import (
    Facts,
    Plan,
    PlannedObligation,
    PlannedStep,
    Waived,
    next_repeat,
    plan_close,
    plan_follow_up,
    plan_level_change,
)
from responder.policy.rules import RuleSet
from responder.rows import Step
from responder.timeutil import from_db, to_db

LIVE = "status IN ('open', 'breached') AND met_at IS NULL"  # a duty still to be done
# A correction (限期整改) asked of a unit after a breach is kept on an obligation of its own,
# so that the engine reminds the unit's head as the deadline nears (see start_correction).
CORRECTION = "correction"
# Obligations that a publication rule set made (not a correction's clock).
PUBLICATION = f"kind != '{CORRECTION}'"


def _t(row: Any, key: str) -> datetime:
    value = from_db(row[key])
    assert value is not None
    return value


def rules_of(cfg: Config, incident: Any) -> RuleSet | None:
    """The rule set an incident was declared under (None: no rule set was in force)."""
    return next((r for r in cfg.rule_sets if r.id == incident["rule_set_id"]), None)


# -- planned ---------------------------------------------------------------------------


def _insert_obligation(
    tx: sqlite3.Connection, incident_id: str, rule_set_id: str, ob: PlannedObligation, now: datetime
) -> int:
    cur = tx.execute(
        "INSERT INTO obligations (incident_id, kind, seq, name, name_en, milestone, level,"
        " rule_set_id, clock_start_kind, clock_start_at, within_s, deadline, status,"
        " breached_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'open',NULL,?)",
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
            to_db(now),
        ),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


_INSERT_STEP = (
    "INSERT INTO steps (incident_id, obligation_id, name, kind, nominal_at, due_at, audience,"
    " channels, is_deadline, repeat_s, collapsed, all_channels) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)


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


def insert_step(
    tx: sqlite3.Connection, incident_id: str, obligation_id: int, s: PlannedStep
) -> int:
    cur = tx.execute(_INSERT_STEP, _step_row(incident_id, obligation_id, s))
    assert cur.lastrowid is not None
    return cur.lastrowid


def add(
    tx: sqlite3.Connection,
    cfg: Config,
    incident_id: str,
    rule_set_id: str,
    plan: Plan,
    now: datetime,
) -> list[str]:
    """Store a plan's obligations and steps, and breach at once each obligation the planner
    found already past its deadline (a late declaration, a raise into an overdue duty).
    Returns the kinds breached."""
    ids: dict[tuple[str, int], int] = {}
    for ob in plan.obligations:
        ids[(ob.kind, ob.seq)] = _insert_obligation(tx, incident_id, rule_set_id, ob, now)
    tx.executemany(  # one round trip for all of a declaration's steps
        _INSERT_STEP,
        [_step_row(incident_id, ids[(s.obligation_kind, s.obligation_seq)], s) for s in plan.steps],
    )
    breached = []
    for ob in plan.obligations:
        if ob.status == "breached":
            breach(tx, cfg, ids[(ob.kind, ob.seq)], now)
            breached.append(ob.kind)
    return breached


# -- repeated --------------------------------------------------------------------------


def repeat(tx: sqlite3.Connection, step: Step, deadline: datetime, now: datetime) -> int:
    """Store the next repeat of a step that repeats after the deadline (every 30 min, say)."""
    assert step.repeat_s
    every = timedelta(seconds=step.repeat_s)
    at = next_repeat(deadline, every, now)
    planned = PlannedStep(
        obligation_kind="",  # the obligation is known by id here
        obligation_seq=0,
        name="repeat",
        kind="repeat",
        nominal_at=at,
        due_at=at,
        audience=tuple(step.audience),
        channels=tuple(step.channels),
        repeat_every=every,
    )
    return insert_step(tx, step.incident_id, step.obligation_id, planned)


def _cancel_steps(tx: sqlite3.Connection, obligation_id: int, now: datetime) -> None:
    tx.execute(
        "UPDATE steps SET status = 'cancelled', cancelled_at = ?"
        " WHERE obligation_id = ? AND status = 'pending'",
        (to_db(now), obligation_id),
    )


def _cancel_queued(tx: sqlite3.Connection, obligation_id: int) -> None:
    """A met or waived obligation needs no more messages: drop those not yet handed to a
    channel — but not a message that also tells of another obligation still to be told (it
    goes, without this one: see engine.compose)."""
    tx.execute(
        "UPDATE notifications SET status = 'cancelled', last_error = 'obligation closed'"
        " WHERE obligation_id = ? AND status = 'queued' AND kind != 'watchdog'"
        " AND NOT EXISTS (SELECT 1 FROM notifications c WHERE c.carried_by = notifications.id"
        "  AND c.status = 'queued' AND c.obligation_id != ?)",
        (obligation_id, obligation_id),
    )


def fire(tx: sqlite3.Connection, step_ids: list[int], now: datetime) -> set[int]:
    """Mark due steps fired — conditionally (``status = 'pending'``), so a step cancelled by a
    milestone meanwhile is not fired, and no step fires twice.  Returns the ids this call won."""
    marks = ",".join("?" * len(step_ids))
    cur = tx.execute(
        f"UPDATE steps SET status = 'fired', fired_at = ? WHERE id IN ({marks})"
        " AND status = 'pending' RETURNING id",
        (to_db(now), *step_ids),
    )
    return {r[0] for r in cur.fetchall()}


# -- breached, and its accountability record ------------------------------------------------


def breach(tx: sqlite3.Connection, cfg: Config, obligation_id: int, at: datetime) -> int | None:
    """Mark an open obligation breached at its deadline and open its accountability record.

    Conditional on ``status = 'open'``: whoever gets here first (the scheduler firing the
    deadline step, or a milestone recorded after the deadline) does it, exactly once.
    Returns the accountability record's id, or None when the obligation was not open, or
    when no record is opened: a drill's breach is an exercise, not a unit's failure, and an
    overdue correction is the same record's matter, not a new one.
    """
    cur = tx.execute(
        "UPDATE obligations SET status = 'breached', breached_at = deadline"
        " WHERE id = ? AND status = 'open'",
        (obligation_id,),
    )
    if cur.rowcount == 0:
        return None
    row = tx.execute(
        "SELECT o.incident_id, o.deadline, o.kind, o.name, o.name_en, o.level, o.rule_set_id,"
        " o.within_s, i.lead_unit, i.drill"
        " FROM obligations o JOIN incidents i ON i.id = o.incident_id WHERE o.id = ?",
        (obligation_id,),
    ).fetchone()
    assert row is not None
    if row["drill"] or row["kind"] == CORRECTION:
        return None
    head = responsible_person(cfg, row["lead_unit"])
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
            json.dumps(_grounds(cfg, row), ensure_ascii=False),
            to_db(at),
        ),
    )
    return cur.lastrowid


def _grounds(cfg: Config, ob: Any) -> dict[str, Any]:
    """What set the limit, frozen into the record when it opens: the rule set and the clause
    as they read then (the files may be edited before the review), and the person who was the
    unit's head then (recorded in its column)."""
    rules = next((r for r in cfg.rule_sets if r.id == ob["rule_set_id"]), None)
    rule = rules.obligation(ob["kind"]) if rules else None
    return {
        "obligation": ob["kind"],
        "obligation_name": ob["name"],
        "obligation_name_en": ob["name_en"],
        "level": ob["level"],
        "within_s": ob["within_s"],
        "rule_set": ob["rule_set_id"],
        "rule_set_title": rules.title if rules else "",
        "rule_set_title_en": rules.title_en if rules else "",
        "clause": (rule.basis if rule and rule.basis else rules.basis if rules else ""),
    }


def _settle(
    tx: sqlite3.Connection, obligation_id: int, met_at: datetime, recorded_late: bool
) -> None:
    """A breached obligation was met after all: its record says when, and by how much it
    overran."""
    row = tx.execute(
        "SELECT id, deadline, evidence FROM accountability_records WHERE obligation_id = ?",
        (obligation_id,),
    ).fetchone()
    if row is None:
        return
    evidence = json.loads(row["evidence"])
    if recorded_late:
        evidence["recorded_late"] = True
    tx.execute(
        "UPDATE accountability_records SET met_at = ?, overrun_s = ?, evidence = ? WHERE id = ?",
        (
            to_db(met_at),
            # Met in time but recorded after the scheduler breached it: no overrun, not negative.
            max(0, int((met_at - _t(row, "deadline")).total_seconds())),
            json.dumps(evidence, ensure_ascii=False),
            row["id"],
        ),
    )


# -- met -----------------------------------------------------------------------------------


def open_deadline(tx: sqlite3.Connection, incident_id: str, milestone: str) -> datetime | None:
    """The deadline of the oldest duty of this milestone still to be done, if any."""
    row = tx.execute(
        f"SELECT deadline FROM obligations WHERE incident_id = ? AND milestone = ? AND {LIVE}"
        " ORDER BY seq LIMIT 1",
        (incident_id, milestone),
    ).fetchone()
    return from_db(row["deadline"]) if row else None


def meet(
    tx: sqlite3.Connection,
    cfg: Config,
    incident_id: str,
    milestone: str,
    happened_at: datetime,
    now: datetime,
) -> list[dict[str, Any]]:
    """Meet the oldest duty of this milestone still to be done; cancel its steps and queued
    messages.  Returns what was met (an empty list when nothing was due).

    Met at the time the milestone *happened*.  Dated before its deadline but typed in after
    it: met, and flagged recorded_late for the reviewers.  Happened after the deadline: it
    stays breached (with an accountability record) and records when it was met.
    """
    ob = tx.execute(
        f"SELECT * FROM obligations WHERE incident_id = ? AND milestone = ? AND {LIVE}"
        " ORDER BY seq LIMIT 1",
        (incident_id, milestone),
    ).fetchone()
    if ob is None:
        return []
    deadline = _t(ob, "deadline")
    in_time = happened_at <= deadline
    recorded_late = in_time and now > deadline
    if not in_time:
        breach(tx, cfg, ob["id"], now)
    status = "met" if in_time else "breached"
    tx.execute(
        "UPDATE obligations SET status = ?, met_at = ?, met_recorded_at = ?, recorded_late = ?"
        " WHERE id = ?",
        (status, to_db(happened_at), to_db(now), int(recorded_late), ob["id"]),
    )
    _settle(tx, ob["id"], happened_at, recorded_late)
    _cancel_steps(tx, ob["id"], now)
    _cancel_queued(tx, ob["id"])
    return [
        {
            "obligation": ob["kind"],
            "seq": ob["seq"],
            "status": status,
            "recorded_late": recorded_late,
            "overrun_s": max(0, int((happened_at - deadline).total_seconds())),
        }
    ]


# -- follow-up releases --------------------------------------------------------------------


def last_release(tx: sqlite3.Connection, incident_id: str) -> datetime | None:
    """When the incident's latest release went out: the next follow-up's clock start."""
    (last,) = tx.execute(
        "SELECT MAX(published_at) FROM releases WHERE incident_id = ?", (incident_id,)
    ).fetchone()
    return from_db(last)


def start_follow_up(
    tx: sqlite3.Connection, cfg: Config, incident: Any, released_at: datetime, now: datetime
) -> list[PlannedObligation]:
    """Start the next follow-up release clock (if the level has one); return what it added."""
    rules = rules_of(cfg, incident)
    if rules is None:
        return []
    (last_seq,) = tx.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM obligations"
        " WHERE incident_id = ? AND milestone = 'follow_up_release'",
        (incident["id"],),
    ).fetchone()
    plan = plan_follow_up(rules, incident["level"], released_at, last_seq + 1, now)
    add(tx, cfg, incident["id"], rules.id, plan, now)
    return list(plan.obligations)


def _needs_follow_up(tx: sqlite3.Connection, incident_id: str) -> bool:
    """Released before, and no release obligation is live (open, or breached and unmet):
    neither a follow-up nor an authoritative release whose recording will start one."""
    row = tx.execute(
        "SELECT EXISTS (SELECT 1 FROM releases WHERE incident_id = ?),"
        " EXISTS (SELECT 1 FROM obligations WHERE incident_id = ? AND milestone IN"
        f" ('follow_up_release', 'authoritative_release') AND {LIVE})",
        (incident_id, incident_id),
    ).fetchone()
    return bool(row[0]) and not row[1]


# -- waived, raised back, and the level changes that do it -----------------------------------


def waive(tx: sqlite3.Connection, obligation_id: int, reason: str, now: datetime) -> bool:
    """Waive an open obligation (the level was lowered, the incident closed): its steps and
    queued messages stop.  Returns whether it was open."""
    cur = tx.execute(
        "UPDATE obligations SET status = 'waived', waived_at = ?, waived_reason = ?"
        " WHERE id = ? AND status = 'open'",
        (to_db(now), reason, obligation_id),
    )
    _cancel_steps(tx, obligation_id, now)
    _cancel_queued(tx, obligation_id)
    return cur.rowcount == 1


def _latest(tx: sqlite3.Connection, incident_id: str) -> dict[str, Any]:
    """Each kind's latest obligation (the highest seq)."""
    latest: dict[str, Any] = {}
    for r in tx.execute(
        f"SELECT * FROM obligations WHERE incident_id = ? AND {PUBLICATION} ORDER BY kind, seq, id",
        (incident_id,),
    ):
        latest[r["kind"]] = r
    return latest


def change_level(
    tx: sqlite3.Connection,
    cfg: Config,
    incident: Any,
    to_level: str,
    reason: str,
    now: datetime,
) -> dict[str, list[str]]:
    """The obligations' side of a level change: returns the kinds ``added``, ``waived`` and
    ``breached``.

    1. An open duty already past its deadline is breached first, whether or not the
       scheduler has fired its deadline step yet: a lowering must not waive a breach.
    2. The planner says what the new level adds and waives; a duty a lowering had waived
       comes back on the clock it had (lowering and raising again moves no deadline).
    3. Waived duties stop alerting; so do the repeats of a breach the new level no longer
       asks for (the breach itself stays on record).
    4. Raised into continuous release after an earlier release, the next follow-up counts
       from the raise — or, when a lowering had waived it, from the last release.
    """
    added: list[str] = []
    waived: list[str] = []
    breached: list[str] = []
    rules = rules_of(cfg, incident)
    if rules is None:
        return {"added": added, "waived": waived, "breached": breached}
    old = incident["level"]
    latest = _latest(tx, incident["id"])
    existing = {}
    for kind, r in latest.items():  # 1.
        existing[kind] = r["status"]
        if r["status"] == "open" and _t(r, "deadline") <= now:
            breach(tx, cfg, r["id"], now)
            existing[kind] = "breached"
            breached.append(kind)
    earlier = {
        kind: Waived(r["clock_start_kind"], _t(r, "clock_start_at"), r["seq"])
        for kind, r in latest.items()
        if r["status"] == "waived"
    }
    facts = Facts(
        old,
        _t(incident, "occurred_at"),
        _t(incident, "declared_at"),
        from_db(incident["learned_at"]),
    )
    change = plan_level_change(facts, to_level, rules, existing, now, now, earlier)  # 2.
    for kind in change.waive:  # 3.
        waive(tx, latest[kind]["id"], f"级别由 {old} 调整为 {to_level}:{reason}", now)
        waived.append(kind)
    for kind, r in latest.items():
        rule = rules.obligation(kind)
        if existing[kind] == "breached" and rule and to_level not in rule.levels:
            _cancel_steps(tx, r["id"], now)
    breached += add(tx, cfg, incident["id"], rules.id, change.add, now)
    added += [ob.kind for ob in change.add.obligations]
    if change.direction == "raised" and _needs_follow_up(tx, incident["id"]):  # 4.
        follow_up_waived = any(
            r["milestone"] == "follow_up_release" and r["status"] == "waived"
            for r in latest.values()
        )
        since = (last_release(tx, incident["id"]) if follow_up_waived else None) or now
        raised = {**dict(incident), "level": to_level}
        for ob in start_follow_up(tx, cfg, raised, since, now):
            added.append(ob.kind)
            if ob.status == "breached":
                breached.append(ob.kind)
    return {"added": added, "waived": waived, "breached": breached}


# -- settled when the incident closes ---------------------------------------------------------


def close(
    tx: sqlite3.Connection, cfg: Config, incident_id: str, reason: str, now: datetime
) -> dict[str, list[str]]:
    """The incident closes: what is overdue is breached, the rest waived; every pending step
    and queued message of the incident stops (a breach's repeats too).  Returns the kinds
    ``breached`` and ``waived``."""
    # A correction's clock outlives the incident: the review comes after it is over.
    corrections = f"SELECT id FROM obligations WHERE incident_id = ? AND kind = '{CORRECTION}'"
    open_obs = tx.execute(
        "SELECT id, kind, deadline FROM obligations WHERE incident_id = ? AND status = 'open'"
        f" AND {PUBLICATION}",
        (incident_id,),
    ).fetchall()
    tx.execute(
        "UPDATE steps SET status = 'cancelled', cancelled_at = ?"
        f" WHERE incident_id = ? AND status = 'pending' AND obligation_id NOT IN ({corrections})",
        (to_db(now), incident_id, incident_id),
    )
    # Not a message that also carries a correction's news (the correction goes on).
    tx.execute(
        "UPDATE notifications SET status = 'cancelled', last_error = 'incident closed'"
        " WHERE incident_id = ? AND status = 'queued' AND kind != 'watchdog'"
        f" AND (obligation_id IS NULL OR obligation_id NOT IN ({corrections}))"
        " AND NOT EXISTS (SELECT 1 FROM notifications c WHERE c.carried_by = notifications.id"
        f"  AND c.status = 'queued' AND c.obligation_id IN ({corrections}))",
        (incident_id, incident_id, incident_id),
    )
    kinds = {ob["id"]: ob["kind"] for ob in open_obs}
    to_breach, to_waive = plan_close({ob["id"]: _t(ob, "deadline") for ob in open_obs}, now)
    for ob_id in to_breach:
        breach(tx, cfg, ob_id, now)
    for ob_id in to_waive:
        waive(tx, ob_id, f"事件已关闭:{reason}", now)
    return {"breached": [kinds[i] for i in to_breach], "waived": [kinds[i] for i in to_waive]}


# -- a correction's clock (限期整改) ------------------------------------------------------------


def start_correction(
    tx: sqlite3.Connection, cfg: Config, record: Any, due_at: datetime, now: datetime
) -> int:
    """Start the clock of a correction asked of the record's unit: an obligation of kind
    ``correction`` due at ``due_at``, whose steps tell the unit's head now, remind them at the
    configured times before the deadline, and again every ``correction_overdue_every`` once it
    is overdue, until the correction report is in.  The scheduler fires them as any other step
    (even after the incident closed).  Returns the obligation's id."""
    ob = tx.execute(
        "SELECT incident_id, level, rule_set_id FROM obligations WHERE id = ?",
        (record["obligation_id"],),
    ).fetchone()
    (seq,) = tx.execute(
        f"SELECT COUNT(*) + 1 FROM obligations WHERE incident_id = ? AND kind = '{CORRECTION}'",
        (ob["incident_id"],),
    ).fetchone()
    cur = tx.execute(
        "INSERT INTO obligations (incident_id, kind, seq, name, name_en, milestone, level,"
        " rule_set_id, clock_start_kind, clock_start_at, within_s, deadline, status,"
        " created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'open',?)",
        (
            ob["incident_id"],
            CORRECTION,
            seq,
            "提交整改报告",
            "Correction report submitted",
            "correction_report",
            ob["level"],
            ob["rule_set_id"],
            "decided_at",
            to_db(now),
            int((due_at - now).total_seconds()),
            to_db(due_at),
            to_db(now),
        ),
    )
    obligation_id = cur.lastrowid
    assert obligation_id is not None
    plan = cfg.accountability
    audience = (f"head@{record['unit']}",)
    steps = [("decided", "notice", now)]
    steps += [
        (f"T{_offset(d)}", "reminder", due_at + d)
        for d in sorted(plan.correction_reminders)
        if due_at + d > now  # a reminder already past would only repeat the notice
    ]
    for name, kind, at in steps:
        insert_step(
            tx,
            ob["incident_id"],
            obligation_id,
            PlannedStep("", 0, name, kind, at, at, audience, ()),
        )
    insert_step(
        tx,
        ob["incident_id"],
        obligation_id,
        PlannedStep(
            "",
            0,
            "deadline",
            "deadline",
            due_at,
            due_at,
            audience,
            (),
            is_deadline=True,
            repeat_every=plan.correction_overdue_every,
        ),
    )
    return obligation_id


def _offset(d: timedelta) -> str:
    """-7d, -1d, -12h: a reminder's name, as the config writes it."""
    seconds = int(-d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"-{seconds // size}{unit}"
    return f"-{seconds}s"


def settle_correction(
    tx: sqlite3.Connection, cfg: Config, obligation_id: int, received_at: datetime, now: datetime
) -> bool:
    """The correction report came in at ``received_at``: the clock stops; met when in time,
    else it stays overdue (breached) with the time it came.  Returns whether it was in time."""
    ob = tx.execute("SELECT * FROM obligations WHERE id = ?", (obligation_id,)).fetchone()
    deadline = _t(ob, "deadline")
    in_time = received_at <= deadline
    if not in_time:
        breach(tx, cfg, obligation_id, now)  # opens no record: a correction's own clock
    tx.execute(
        "UPDATE obligations SET status = ?, met_at = ?, met_recorded_at = ?, recorded_late = ?"
        " WHERE id = ? AND status IN ('open', 'breached')",
        (
            "met" if in_time else "breached",
            to_db(received_at),
            to_db(now),
            int(in_time and now > deadline),
            obligation_id,
        ),
    )
    _cancel_steps(tx, obligation_id, now)
    _cancel_queued(tx, obligation_id)
    return in_time


def withdraw_correction(
    tx: sqlite3.Connection, obligation_id: int, reason: str, now: datetime
) -> None:
    """A corrected decision no longer asks for this correction: its reminders stop (an
    overdue one too)."""
    waive(tx, obligation_id, reason, now)  # stops its steps and queued messages in any state


def record_decided(
    tx: sqlite3.Connection,
    record_id: int,
    proposed: str,
    decided: str | None,
    reason: str,
    actor: str,
    now: datetime,
) -> None:
    """The accountability record's current decision (the decisions themselves, never changed,
    are :mod:`responder.accountability`'s)."""
    tx.execute(
        "UPDATE accountability_records SET status = 'decided', proposed_measure = ?,"
        " decided_measure = ?, decision_reason = ?, decided_by = ?, decided_at = ? WHERE id = ?",
        (proposed, decided, reason, actor, to_db(now), record_id),
    )
