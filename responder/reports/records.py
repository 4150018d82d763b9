"""The complete accountability record as a reviewer reads it: the facts of the breach, the
rule and clause that set the limit, the ladder's proposal, every decision (corrections too),
the interview and the correction, and the evidence with times — all read from the store."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

from responder import accountability
from responder.config import Config
from responder.errors import BadInput, NotFound
from responder.policy.rules import LEVEL_NAMES, LEVEL_NAMES_EN
from responder.reports import evidence
from responder.store import Database
from responder.timeutil import format_duration, from_db, iso_local, local, show, to_db

QUARTER = re.compile(r"^(\d{4})-?Q([1-4])$")


def quarter_bounds(year: int, quarter: int, cfg: Config) -> tuple[datetime, datetime]:
    """The quarter's first instant and the next quarter's, in the configured zone."""
    start = datetime(year, 3 * quarter - 2, 1, tzinfo=cfg.tz)
    end = (
        datetime(year + 1, 1, 1, tzinfo=cfg.tz)
        if quarter == 4
        else datetime(year, 3 * quarter + 1, 1, tzinfo=cfg.tz)
    )
    return start, end


def parse_quarter(text: str) -> tuple[int, int]:
    m = QUARTER.match(text.strip().upper())
    if not m or not 2000 <= int(m.group(1)) <= 2999:
        raise BadInput(
            "bad_quarter",
            f"季度应写作 2026Q4 这样的形式,收到“{text[:20]}”",
            f"a quarter is written like 2026Q4, not '{text[:20]}'",
        )
    return int(m.group(1)), int(m.group(2))


def _t(value: str | None, cfg: Config) -> str | None:
    return iso_local(from_db(value), cfg.tz)


def _unit_name(cfg: Config, unit_id: str) -> str:
    u = cfg.unit(unit_id)
    return u.name if u else unit_id


def _unit_name_en(cfg: Config, unit_id: str) -> str:
    u = cfg.unit(unit_id)
    return (u.name_en or u.name) if u else unit_id


def _person(cfg: Config, person_id: str | None) -> dict[str, Any] | None:
    if not person_id:
        return None
    p = cfg.person(person_id)
    return {"id": person_id, "name": p.name if p else person_id}


def decision_views(rows: list[Any], cfg: Config) -> list[dict[str, Any]]:
    corrected_by = {d["corrects"]: d["id"] for d in rows if d["corrects"]}
    current = rows[-1]["id"] if rows else None
    return [
        {
            "id": d["id"],
            "record_id": d["record_id"],
            "action": d["action"],
            "measure": d["measure"],
            **accountability.measure_names(d["measure"]),
            "proposed_measure": d["proposed_measure"],
            "grounds": json.loads(d["proposal"]).get("grounds", []),
            "grounds_en": json.loads(d["proposal"]).get("grounds_en", []),
            "reason": d["reason"],
            "correction_required": d["correction_required"],
            "correction_due_at": _t(d["correction_due_at"], cfg),
            "corrects": d["corrects"],
            "corrected_by": corrected_by.get(d["id"]),
            "current": d["id"] == current,
            "decided_by": d["decided_by"],
            "decided_at": _t(d["decided_at"], cfg),
            "audit_seq": d["audit_seq"],
            "evidence_digest": d["evidence_digest"],
        }
        for d in rows
    ]


def interview_view(v: Any, cfg: Config) -> dict[str, Any]:
    return {
        "id": v["id"],
        "decision_id": v["decision_id"],
        "unit": v["unit"],
        "unit_name": _unit_name(cfg, v["unit"]),
        "unit_name_en": _unit_name_en(cfg, v["unit"]),
        "interviewee": v["interviewee"],
        "reason": v["reason"],
        "held_at": _t(v["held_at"], cfg),
        "place": v["place"],
        "conducted_by": v["conducted_by"],
        "correction_required": v["correction_required"],
        "correction_due_at": _t(v["correction_due_at"], cfg),
        "recorded_by": v["recorded_by"],
        "recorded_at": _t(v["recorded_at"], cfg),
    }


def correction_state(c: Any, now: datetime) -> str:
    """open, overdue, received (in time), received_late, withdrawn."""
    due = from_db(c["due_at"])
    assert due is not None
    if c["status"] == "received":
        received = from_db(c["report_received_at"])
        return "received" if received is not None and received <= due else "received_late"
    if c["status"] == "withdrawn":
        return "withdrawn"
    return "overdue" if now >= due else "open"


CORRECTION_STATES = {
    "open": ("整改中", "open"),
    "overdue": ("已逾期", "overdue"),
    "received": ("已按期提交整改报告", "report received in time"),
    "received_late": ("逾期后提交整改报告", "report received late"),
    "withdrawn": ("已撤销(决定已更正)", "withdrawn (decision corrected)"),
}


def correction_view(c: Any, cfg: Config, now: datetime) -> dict[str, Any]:
    state = correction_state(c, now)
    due = from_db(c["due_at"])
    assert due is not None
    return {
        "id": c["id"],
        "decision_id": c["decision_id"],
        "unit": c["unit"],
        "unit_name": _unit_name(cfg, c["unit"]),
        "unit_name_en": _unit_name_en(cfg, c["unit"]),
        "required": c["required"],
        "due_at": _t(c["due_at"], cfg),
        "state": state,
        "state_name": CORRECTION_STATES[state][0],
        "state_name_en": CORRECTION_STATES[state][1],
        "overdue_by": format_duration(now - due) if state == "overdue" else None,
        "overdue_by_en": format_duration(now - due, "en") if state == "overdue" else None,
        "report_received_at": _t(c["report_received_at"], cfg),
        "report_text": c["report_text"],
        "report_recorded_by": c["report_recorded_by"],
    }


def record_summary(r: Any, ob: Any, incident: Any, cfg: Config, now: datetime) -> dict[str, Any]:
    """The facts of one breach (the list and the record page share them)."""
    grounds = json.loads(r["evidence"] or "{}")
    late_by = accountability.overrun(r, ob, now)
    met = from_db(ob["met_at"])
    recorded = from_db(ob["met_recorded_at"])
    breached = from_db(r["breached_at"])
    return {
        "id": r["id"],
        "state": r["status"],
        "incident_id": r["incident_id"],
        "incident_title": incident["title"],
        "incident_level": incident["level"],
        "incident_level_name": LEVEL_NAMES.get(incident["level"], ""),
        "incident_level_name_en": LEVEL_NAMES_EN.get(incident["level"], ""),
        "drill": bool(incident["drill"]),
        "obligation_id": r["obligation_id"],
        "obligation": ob["kind"],
        "obligation_name": ob["name"],
        "obligation_name_en": ob["name_en"],
        "rule_set": grounds.get("rule_set") or ob["rule_set_id"],
        "rule_set_title": grounds.get("rule_set_title", ""),
        "rule_set_title_en": grounds.get("rule_set_title_en", ""),
        "clause": grounds.get("clause", ""),
        "within": format_duration(timedelta(seconds=ob["within_s"])),
        "within_en": format_duration(timedelta(seconds=ob["within_s"]), "en"),
        "unit": r["unit"],
        "unit_name": _unit_name(cfg, r["unit"]),
        "unit_name_en": _unit_name_en(cfg, r["unit"]),
        "responsible_person": _person(cfg, r["responsible_person"]),
        "deadline": _t(r["deadline"], cfg),
        "deadline_local": show(from_db(r["deadline"]), cfg.tz),
        "breached_at": _t(r["breached_at"], cfg),
        "quarter": _quarter_of(breached, cfg) if breached else None,
        "met_at": _t(ob["met_at"], cfg),
        "met_at_local": show(met, cfg.tz) if met else "",
        "met_recorded_at": _t(ob["met_recorded_at"], cfg),
        "still_open": met is None,
        "overrun_s": int(late_by.total_seconds()),
        "overrun": format_duration(late_by),
        "overrun_en": format_duration(late_by, "en"),
        "recorded_late": bool(ob["recorded_late"]),
        "recording_delay_s": int((recorded - met).total_seconds()) if met and recorded else None,
        "met_in_time_recorded_after_breach": accountability.met_in_time(ob),
        "decided_measure": r["decided_measure"],
        **{
            f"decided_{k}": v for k, v in accountability.measure_names(r["decided_measure"]).items()
        },
    }


def _quarter_of(t: datetime, cfg: Config) -> str:
    lt = local(t, cfg.tz)
    return f"{lt.year}Q{(lt.month - 1) // 3 + 1}"


async def record_file(db: Database, cfg: Config, record_id: int, now: datetime) -> dict[str, Any]:
    """One record, complete: facts, proposal, decisions, interview, correction, evidence."""
    r = await db.fetchone("SELECT * FROM accountability_records WHERE id = ?", (record_id,))
    if r is None:
        raise NotFound(
            "record_not_found",
            f"找不到问责记录 {record_id}",
            f"no accountability record {record_id}",
        )
    rows = await evidence.read(db, evidence.OBLIGATION_SQL, r["obligation_id"])
    (ob,) = rows["obligations"]
    (incident,) = rows["incidents"]
    priors = await db.scan(accountability.PRIOR_BREACHES, accountability.lookback_params(cfg, r))
    decisions = await db.scan(
        "SELECT * FROM accountability_decisions WHERE record_id = ? ORDER BY id", (record_id,)
    )
    interviews = await db.scan(
        "SELECT * FROM accountability_interviews WHERE record_id = ? ORDER BY id", (record_id,)
    )
    corrections = await db.scan(
        "SELECT * FROM accountability_corrections WHERE record_id = ? ORDER BY id", (record_id,)
    )
    proposal = accountability.propose(cfg, r, ob, priors, now)
    return {
        **record_summary(r, ob, incident, cfg, now),
        "proposal": {**proposal, **accountability.measure_names(proposal["measure"])},
        "decisions": decision_views(list(decisions), cfg),
        "interviews": [interview_view(v, cfg) for v in interviews],
        "corrections": [correction_view(c, cfg, now) for c in corrections],
        "evidence": {
            "summary": evidence.summary(cfg, rows),
            "timeline": evidence.timeline(cfg, rows),
        },
    }


async def record_list(
    db: Database,
    cfg: Config,
    now: datetime,
    *,
    unit: str | None = None,
    quarter: str | None = None,
    state: str | None = None,
) -> list[dict[str, Any]]:
    """Records newest first, filtered by unit, quarter of the breach (2026Q4), state."""
    where, params = [], []
    if unit:
        where.append("r.unit = ?")
        params.append(unit)
    if state:
        where.append("r.status = ?")
        params.append(state)
    if quarter:
        start, end = quarter_bounds(*parse_quarter(quarter), cfg)
        where.append("r.breached_at >= ? AND r.breached_at < ?")
        params += [from_local(start), from_local(end)]
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = await db.scan(
        "SELECT r.*, o.kind, o.name, o.name_en, o.rule_set_id, o.within_s, o.deadline AS"
        " o_deadline, o.met_at, o.met_recorded_at, o.recorded_late, i.title, i.level, i.drill"
        " FROM accountability_records r JOIN obligations o ON o.id = r.obligation_id"
        f" JOIN incidents i ON i.id = r.incident_id{clause}"
        " ORDER BY r.breached_at DESC, r.id DESC LIMIT 1000",
        params,
    )
    return [record_summary(r, _Ob(r), _Ob(r), cfg, now) for r in rows]


class _Ob(dict[str, Any]):
    """A joined row read as the obligation's and the incident's columns."""

    def __init__(self, row: Any) -> None:
        super().__init__(dict(row))
        self["deadline"] = row["o_deadline"]


def from_local(t: datetime) -> str:
    value = to_db(t)
    assert value is not None
    return value
