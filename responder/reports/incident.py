"""The per-incident report: what happened, every obligation with its deadline, when it was met
and by how much it overran, the accountability decisions, and the evidence timeline."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from responder.config import Config
from responder.errors import NotFound
from responder.models import CATEGORIES
from responder.obligations import CORRECTION
from responder.policy.rules import LEVEL_NAMES
from responder.reports import evidence
from responder.reports.records import correction_view, decision_views, interview_view
from responder.store import Database
from responder.timeutil import format_duration, from_db, show

STATUS_NAMES = {
    "open": ("未到期", "open"),
    "met": ("按时完成", "met in time"),
    "breached": ("超时", "breached"),
    "waived": ("已免除", "waived"),
}


def _obligation_line(o: Any, cfg: Config, now: datetime) -> dict[str, Any]:
    deadline, met = from_db(o["deadline"]), from_db(o["met_at"])
    assert deadline is not None
    over = max(timedelta(0), (met or now) - deadline) if o["status"] == "breached" else None
    return {
        "id": o["id"],
        "kind": o["kind"],
        "name": o["name"],
        "name_en": o["name_en"],
        "seq": o["seq"],
        "deadline": show(deadline, cfg.tz),
        "met_at": show(met, cfg.tz) if met else "",
        "status": o["status"],
        "status_name": STATUS_NAMES[o["status"]][0],
        "status_name_en": STATUS_NAMES[o["status"]][1],
        "overrun": format_duration(over) if over is not None else "",
        "overrun_s": int(over.total_seconds()) if over is not None else None,
        "still_open": o["status"] == "breached" and met is None,
        "recorded_late": bool(o["recorded_late"]),
        "waived_reason": o["waived_reason"] or "",
    }


def _decision_events(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "at": d["decided_at"],
            "at_local": d["decided_at"][:19].replace("T", " ") if d["decided_at"] else "",
            "source": f"accountability_decisions:{d['id']}",
            "obligation_id": None,
            "what": f"问责决定:{d['measure_name']}(由 {d['decided_by']} 作出"
            + (f",更正决定 {d['corrects']}" if d["corrects"] else "")
            + ")",
            "what_en": f"accountability decision: {d['measure_name_en']} by {d['decided_by']}"
            + (f", correcting decision {d['corrects']}" if d["corrects"] else ""),
        }
        for d in views
    ]


async def build(
    db: Database, cfg: Config, incident_id: str, now: datetime
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The report's content, and the seal of every row it shows."""
    rows = await evidence.read(db, evidence.INCIDENT_SQL, incident_id)
    if not rows["incidents"]:
        raise NotFound(
            "incident_not_found", f"找不到事件 {incident_id}", f"no incident {incident_id}"
        )
    (i,) = rows["incidents"]
    unit = cfg.unit(i["lead_unit"])
    decisions = decision_views(list(rows["accountability_decisions"]), cfg)
    by_record: dict[int, list[dict[str, Any]]] = {}
    for d in decisions:
        by_record.setdefault(d["record_id"], []).append(d)
    obligations = [o for o in rows["obligations"] if o["kind"] != CORRECTION]
    records = []
    for r in rows["accountability_records"]:
        ob = next(o for o in rows["obligations"] if o["id"] == r["obligation_id"])
        records.append(
            {
                "id": r["id"],
                "obligation": ob["name"],
                "obligation_en": ob["name_en"],
                "unit": r["unit"],
                "unit_name": (cfg.unit(r["unit"]).name if cfg.unit(r["unit"]) else r["unit"]),
                "clause": json.loads(r["evidence"] or "{}").get("clause", ""),
                "state": r["status"],
                "decisions": by_record.get(r["id"], []),
            }
        )
    timeline = evidence.timeline(cfg, rows) + _decision_events(decisions)
    timeline.sort(key=lambda e: datetime.fromisoformat(e["at"]))
    report = {
        "report": "incident",
        "made_at": show(now, cfg.tz),
        "incident": {
            "id": i["id"],
            "title": i["title"],
            "category": CATEGORIES.get(i["category"], (i["category"],))[0],
            "level": i["level"],
            "level_name": LEVEL_NAMES.get(i["level"], ""),
            "occurred_at": show(from_db(i["occurred_at"]), cfg.tz),
            "declared_at": show(from_db(i["declared_at"]), cfg.tz),
            "location": i["location"],
            "summary": i["summary"],
            "lead_unit": i["lead_unit"],
            "lead_unit_name": unit.name if unit else i["lead_unit"],
            "drill": bool(i["drill"]),
            "status": i["status"],
            "closed_at": show(from_db(i["closed_at"]), cfg.tz) if i["closed_at"] else "",
            "close_reason": i["close_reason"] or "",
            "rule_set": i["rule_set_id"],
        },
        "obligations": [_obligation_line(o, cfg, now) for o in obligations],
        "records": records,
        "interviews": [interview_view(v, cfg) for v in rows["accountability_interviews"]],
        "corrections": [correction_view(c, cfg, now) for c in rows["accountability_corrections"]],
        "summary": evidence.summary(cfg, rows),
        "timeline": timeline,
    }
    return report, rows


TIMELINE_COLUMNS = ("at", "obligation_id", "source", "what", "what_en")
