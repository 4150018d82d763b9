"""The quarterly notice (按季度予以通报): for each unit, the quarter's incidents it led and how
their deadlines went — met on time, breached, the median and worst time to the authoritative
release and to the press conference — the measures decided on its breaches, its open
corrections, and last quarter's corrections checked again.  Drills are counted apart, in a
section of their own, and never in a unit's record.

"The quarter's incidents" are those that occurred in it (in the configured zone): every
figure of a unit counts the same incidents.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from responder.config import Config
from responder.obligations import CORRECTION
from responder.reports.records import correction_state, correction_view, quarter_bounds
from responder.store import Database
from responder.timeutil import format_duration, from_db, show, to_db

MEASURE_KEYS = ("criticism", "interview", "correction", "exempt", "undecided")

SQL = {
    "incidents": "SELECT * FROM incidents WHERE occurred_at >= ? AND occurred_at < ?",
    "obligations": "SELECT o.* FROM obligations o JOIN incidents i ON i.id = o.incident_id"
    f" WHERE i.occurred_at >= ? AND i.occurred_at < ? AND o.kind != '{CORRECTION}'",
    "releases": "SELECT r.incident_id, MIN(r.published_at) AS at FROM releases r"
    " JOIN incidents i ON i.id = r.incident_id WHERE i.occurred_at >= ? AND i.occurred_at < ?"
    " AND r.kind = 'authoritative' GROUP BY r.incident_id",
    "press_conferences": "SELECT p.incident_id, MIN(p.held_at) AS at FROM press_conferences p"
    " JOIN incidents i ON i.id = p.incident_id WHERE i.occurred_at >= ? AND i.occurred_at < ?"
    " AND p.status = 'held' GROUP BY p.incident_id",
    "accountability_records": "SELECT r.*, (SELECT d.measure FROM accountability_decisions d"
    " WHERE d.record_id = r.id ORDER BY d.id DESC LIMIT 1) AS measure"
    " FROM accountability_records r JOIN incidents i ON i.id = r.incident_id"
    " WHERE i.occurred_at >= ? AND i.occurred_at < ?",
}


def _durations(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"count": 0, "median_s": None, "worst_s": None, "median": "", "worst": ""}
    median, worst = statistics.median(seconds), max(seconds)
    return {
        "count": len(seconds),
        "median_s": int(median),
        "worst_s": int(worst),
        "median": format_duration(timedelta(seconds=median)),
        "worst": format_duration(timedelta(seconds=worst)),
    }


def _figures(
    incidents: list[Any],
    obligations: list[Any],
    firsts: dict[str, dict[str, str]],
) -> dict[str, Any]:
    """A unit's numbers over some incidents (its real ones, or its drills)."""
    owed = [o for o in obligations if o["status"] != "waived"]
    to_release, to_conference = [], []
    for i in incidents:
        occurred = from_db(i["occurred_at"])
        assert occurred is not None
        for what, into in (("release", to_release), ("press_conference", to_conference)):
            at = from_db(firsts[what].get(i["id"]))
            if at is not None:
                into.append((at - occurred).total_seconds())
    return {
        "incidents": len(incidents),
        "obligations": len(owed),
        "met_on_time": sum(o["status"] == "met" for o in owed),
        "breached": sum(o["status"] == "breached" for o in owed),
        "not_yet_due": sum(o["status"] == "open" for o in owed),
        "time_to_release": _durations(to_release),
        "time_to_press_conference": _durations(to_conference),
    }


def _by_unit(rows: Iterable[Any], key: str = "lead_unit") -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        out[r[key]].append(r)
    return out


async def build(
    db: Database, cfg: Config, year: int, quarter: int, now: datetime
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The notice's content, and the rows it rests on (to seal)."""
    start, end = quarter_bounds(year, quarter, cfg)
    span = (to_db(start), to_db(end))
    rows = {name: await db.scan(sql, span) for name, sql in SQL.items()}
    prev_start, _ = quarter_bounds(*_previous(year, quarter), cfg)
    open_corrections = await db.scan(
        "SELECT * FROM accountability_corrections WHERE status = 'open' ORDER BY due_at"
    )
    rechecked = await db.scan(
        "SELECT * FROM accountability_corrections WHERE due_at >= ? AND due_at < ? ORDER BY due_at",
        (to_db(prev_start), span[0]),
    )
    firsts = {
        "release": {r["incident_id"]: r["at"] for r in rows["releases"]},
        "press_conference": {r["incident_id"]: r["at"] for r in rows["press_conferences"]},
    }
    drill_ids = {i["id"] for i in rows["incidents"] if i["drill"]}
    real = [i for i in rows["incidents"] if not i["drill"]]
    drills = [i for i in rows["incidents"] if i["drill"]]
    obs_of = _by_unit(
        [
            {**dict(o), "lead_unit": _lead(rows["incidents"], o["incident_id"])}
            for o in rows["obligations"]
        ]
    )
    units = [u.id for u in cfg.units] + sorted(
        {i["lead_unit"] for i in rows["incidents"]} - {u.id for u in cfg.units}
    )
    sections = []
    for unit in units:
        mine = [i for i in real if i["lead_unit"] == unit]
        mine_ids = {i["id"] for i in mine}
        records = [r for r in rows["accountability_records"] if r["incident_id"] in mine_ids]
        measures = dict.fromkeys(MEASURE_KEYS, 0)
        for r in records:
            measures[r["measure"] or "undecided"] += 1
        u = cfg.unit(unit)
        sections.append(
            {
                "unit": unit,
                "unit_name": u.name if u else unit,
                **_figures(
                    mine, [o for o in obs_of.get(unit, []) if o["incident_id"] in mine_ids], firsts
                ),
                "breaches": len(records),
                "measures": measures,
                "open_corrections": [
                    correction_view(c, cfg, now) for c in open_corrections if c["unit"] == unit
                ],
                "last_quarter_corrections": [
                    correction_view(c, cfg, now) for c in rechecked if c["unit"] == unit
                ],
            }
        )
    drill_sections = [
        {
            "unit": unit,
            "unit_name": cfg.unit(unit).name if cfg.unit(unit) else unit,
            **_figures(
                [i for i in drills if i["lead_unit"] == unit],
                [
                    o
                    for o in obs_of.get(unit, [])
                    if o["incident_id"] in drill_ids
                    and _lead(rows["incidents"], o["incident_id"]) == unit
                ],
                firsts,
            ),
        }
        for unit in sorted({i["lead_unit"] for i in drills})
    ]
    report = {
        "report": "quarterly",
        "year": year,
        "quarter": quarter,
        "period": f"{year}年第{quarter}季度",
        "from": show(start, cfg.tz),
        "until": show(end, cfg.tz),
        "made_at": show(now, cfg.tz),
        "units": sections,
        "totals": _totals(sections),
        "drills": drill_sections,
        "overdue_corrections": sum(correction_state(c, now) == "overdue" for c in open_corrections),
    }
    sealed_rows = {
        "incidents": rows["incidents"],
        "obligations": rows["obligations"],
        "accountability_records": [_record_row(r) for r in rows["accountability_records"]],
        "accountability_corrections": list(
            {c["id"]: c for c in [*open_corrections, *rechecked]}.values()
        ),
    }
    return report, sealed_rows


def _totals(sections: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("incidents", "obligations", "met_on_time", "breached", "not_yet_due", "breaches")
    return {k: sum(s[k] for s in sections) for k in keys}


def _lead(incidents: list[Any], incident_id: str) -> str:
    return next(i["lead_unit"] for i in incidents if i["id"] == incident_id)


def _record_row(r: Any) -> dict[str, Any]:
    """The record's own columns (without the joined current measure), as sealed."""
    out = dict(r)
    out.pop("measure", None)
    return out


def _previous(year: int, quarter: int) -> tuple[int, int]:
    return (year, quarter - 1) if quarter > 1 else (year - 1, 4)


CSV_COLUMNS = (
    "section",
    "unit",
    "unit_name",
    "incidents",
    "obligations",
    "met_on_time",
    "breached",
    "not_yet_due",
    "release_median_s",
    "release_worst_s",
    "press_conference_median_s",
    "press_conference_worst_s",
    "breaches",
    "criticism",
    "interview",
    "correction",
    "exempt",
    "undecided",
    "open_corrections",
    "last_quarter_corrections",
)


def csv_rows(report: dict[str, Any]) -> list[list[Any]]:
    out = []
    for section, items in (("units", report["units"]), ("drills", report["drills"])):
        for s in items:
            m = s.get("measures", {})
            out.append(
                [
                    "演练 drill" if section == "drills" else "单位 unit",
                    s["unit"],
                    s["unit_name"],
                    s["incidents"],
                    s["obligations"],
                    s["met_on_time"],
                    s["breached"],
                    s["not_yet_due"],
                    s["time_to_release"]["median_s"],
                    s["time_to_release"]["worst_s"],
                    s["time_to_press_conference"]["median_s"],
                    s["time_to_press_conference"]["worst_s"],
                    s.get("breaches", ""),
                    *[m.get(k, "") for k in MEASURE_KEYS],
                    len(s.get("open_corrections", [])),
                    len(s.get("last_quarter_corrections", [])),
                ]
            )
    return out
