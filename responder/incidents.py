"""Write jobs for an incident's own life: declare it, change its level, close it.

Each job checks everything first (and changes nothing when it refuses), then writes the
change, what it does to the obligations (:mod:`responder.obligations`) and its audit entry.
Jobs are plain functions of a ``sqlite3.Connection``; :mod:`responder.ops` runs them in one
transaction and wakes the scheduler.  The checks shared with the milestones live here too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from responder import obligations
from responder.config import Config
from responder.engine import audit_head
from responder.errors import BadInput, Conflict, NotFound
from responder.models import ChangeLevel, CloseIncident, DeclareIncident
from responder.policy.planner import Facts, plan_declaration
from responder.policy.rules import rule_set_in_force
from responder.store import audit
from responder.timeutil import from_db, show, to_db

# -- checks (the milestones use them too) -----------------------------------------------------


def not_future(t: datetime, field: str, now: datetime, tz: ZoneInfo) -> None:
    if t > now:
        raise BadInput(
            "time_in_future",
            f"{field} 不能晚于当前时间({show(now, tz)})",
            f"{field} cannot be in the future (now is {show(now, tz)})",
        )


def occurred_at(incident: Any) -> datetime:
    t = from_db(incident["occurred_at"])
    assert t is not None
    return t


def active(tx: sqlite3.Connection, incident_id: str) -> Any:
    """The incident, which must exist and not be closed."""
    row = tx.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        raise NotFound(
            "incident_not_found",
            f"找不到事件 {incident_id}",
            f"no incident {incident_id}",
        )
    if row["status"] == "closed":
        raise Conflict(
            "incident_closed",
            f"事件 {incident_id} 已关闭,不能再修改",
            f"incident {incident_id} is closed and cannot be changed",
        )
    return row


def _known_unit(cfg: Config, unit_id: str, field: str) -> None:
    if cfg.unit(unit_id) is None:
        # The names too: at night a duty officer knows the unit by its name, not its id.
        zh = "、".join(f"{u.id}({u.name})" for u in cfg.units)
        en = ", ".join(f"{u.id} ({u.name_en or u.name})" for u in cfg.units)
        raise BadInput(
            "unknown_unit",
            f"{field}:未知单位“{unit_id}”(可选:{zh})",
            f"{field}: unknown unit '{unit_id}' (known: {en})",
        )


# -- declare ------------------------------------------------------------------------------------


def _next_id(tx: sqlite3.Connection, cfg: Config, now: datetime) -> str:
    """INC-<local date>-<the day's number>."""
    day = now.astimezone(cfg.tz).strftime("%Y%m%d")
    (n,) = tx.execute(
        "INSERT INTO counters (name, value) VALUES (?, 1)"
        " ON CONFLICT(name) DO UPDATE SET value = counters.value + 1 RETURNING value",
        (f"incident:{day}",),
    ).fetchone()
    return f"INC-{day}-{n:04d}"


def declaration(
    cfg: Config, data: DeclareIncident, given: dict[str, Any], actor: str, now: datetime
) -> Callable[[sqlite3.Connection], str]:
    """Check a declaration and plan it (here, before the write transaction: planning is pure
    and the writer is the one shared resource); return the write job that records it.
    The job returns the new incident's id."""
    not_future(data.occurred_at, "occurred_at", now, cfg.tz)
    if data.learned_at is not None:
        not_future(data.learned_at, "learned_at", now, cfg.tz)
        if data.learned_at < data.occurred_at:
            raise BadInput(
                "learned_before_occurred",
                "learned_at(获知时间)不能早于事件发生时间",
                "learned_at cannot be before occurred_at",
            )
    _known_unit(cfg, data.lead_unit, "lead_unit")
    for u in data.co_units:
        _known_unit(cfg, u, "co_units")
    rules = rule_set_in_force(cfg.rule_sets, data.occurred_at)
    facts = Facts(data.level, data.occurred_at, now, data.learned_at)
    plan = plan_declaration(facts, rules, now) if rules else None
    co_units = list(dict.fromkeys(u for u in data.co_units if u != data.lead_unit))

    def declare(tx: sqlite3.Connection) -> str:
        incident_id = _next_id(tx, cfg, now)
        tx.execute(
            "INSERT INTO incidents (id, title, category, level, occurred_at, declared_at,"
            " learned_at, location, summary, lead_unit, co_units, drill, rule_set_id,"
            " declared_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                incident_id,
                data.title,
                data.category,
                data.level,
                to_db(data.occurred_at),
                to_db(now),
                to_db(data.learned_at),
                data.location,
                data.summary,
                data.lead_unit,
                json.dumps(co_units),
                int(data.drill),
                rules.id if rules else None,
                actor,
            ),
        )
        if plan is not None and rules is not None:
            obligations.add(tx, cfg, incident_id, rules.id, plan, now)
        audit.append(
            tx,
            now,
            actor,
            "incident.declared",
            incident_id,
            {
                **data.model_dump(mode="json"),
                **given,
                "rule_set": rules.id if rules else None,
                "obligations": [
                    {"kind": o.kind, "deadline": to_db(o.deadline), "status": o.status}
                    for o in (plan.obligations if plan else ())
                ],
            },
        )
        return incident_id

    return declare


# -- change the level -----------------------------------------------------------------------------


def change_level(
    tx: sqlite3.Connection,
    cfg: Config,
    incident_id: str,
    data: ChangeLevel,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Raise or lower the level, with a reason.  Raising adds obligations; lowering waives."""
    incident = active(tx, incident_id)
    old = incident["level"]
    if data.level == old:
        raise BadInput(
            "same_level",
            f"事件已是 {old} 级,无需调整",
            f"the incident is already level {old}",
        )
    changed = obligations.change_level(tx, cfg, incident, data.level, data.reason, now)
    tx.execute("UPDATE incidents SET level = ? WHERE id = ?", (data.level, incident_id))
    tx.execute(
        "INSERT INTO level_changes (incident_id, from_level, to_level, changed_at, reason,"
        " changed_by, recorded_at) VALUES (?,?,?,?,?,?,?)",
        (incident_id, old, data.level, to_db(now), data.reason, actor, to_db(now)),
    )
    result = {"from": old, "to": data.level, **changed}
    audit.append(
        tx,
        now,
        actor,
        "incident.level_changed",
        incident_id,
        {"from": old, "to": data.level, "reason": data.reason, **changed},
    )
    return result


# -- close ----------------------------------------------------------------------------------------


def close(
    tx: sqlite3.Connection,
    cfg: Config,
    incident_id: str,
    data: CloseIncident,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Close the incident: no more alerts.  What is overdue stays breached; the rest is waived."""
    active(tx, incident_id)
    settled = obligations.close(tx, cfg, incident_id, data.reason, now)
    tx.execute(
        "UPDATE incidents SET status = 'closed', closed_at = ?, close_reason = ? WHERE id = ?",
        (to_db(now), data.reason, incident_id),
    )
    audit.append(
        tx,
        now,
        actor,
        "incident.closed",
        incident_id,
        {"reason": data.reason, "waived": settled["waived"], "breached": settled["breached"]},
    )
    audit_head.at_close(tx, cfg, incident_id, now)  # the head, kept outside the database
    return {"waived": settled["waived"], "breached": settled["breached"]}
