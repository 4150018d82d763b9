"""Read-only questions the API, the pages and the reports ask: only the SQL.  Every answer is
JSON-ready, shaped by :mod:`responder.views` (times in the configured zone, contacts masked)."""

from __future__ import annotations

import json
from typing import Any

from responder.config import Config
from responder.engine.outbox import WHY_MOOT
from responder.errors import NotFound
from responder.store import Database
from responder.timeutil import from_db, iso_local
from responder.views import (
    attempt_view,
    incident_view,
    notification_view,
    record_view,
    timeline_entry,
    told_view,
)


async def incident(db: Database, cfg: Config, incident_id: str) -> dict[str, Any]:
    row = await db.fetchone("SELECT * FROM incidents WHERE id = ?", (incident_id,))
    if row is None:
        raise NotFound(
            "incident_not_found", f"找不到事件 {incident_id}", f"no incident {incident_id}"
        )
    obs = await db.fetchall(
        "SELECT * FROM obligations WHERE incident_id = ? ORDER BY id", (incident_id,)
    )
    return incident_view(row, obs, cfg)


async def incidents(
    db: Database,
    cfg: Config,
    *,
    status: str | None = None,
    level: str | None = None,
    unit: str | None = None,
    drill: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    where, params = [], []
    if status:
        where.append("status = ?")
        params.append(status)
    if level:
        where.append("level = ?")
        params.append(level)
    if unit:
        where.append(
            "(lead_unit = ? OR EXISTS (SELECT 1 FROM json_each(co_units) WHERE value = ?))"
        )
        params += [unit, unit]
    if drill is not None:
        where.append("drill = ?")
        params.append(int(drill))
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    (total,) = await db.scan(f"SELECT COUNT(*) FROM incidents{clause}", params)
    rows = await db.scan(
        f"SELECT * FROM incidents{clause} ORDER BY declared_at DESC, id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return {
        "total": total[0] if total else 0,
        "limit": limit,
        "offset": offset,
        "items": await _with_obligations(db, cfg, rows),
    }


async def _with_obligations(db: Database, cfg: Config, rows: list[Any]) -> list[dict[str, Any]]:
    """The incidents' views, each with its obligations (one query for all of them)."""
    ids = [r["id"] for r in rows]
    by_incident: dict[str, list[Any]] = {i: [] for i in ids}
    if ids:
        marks = ",".join("?" * len(ids))
        for o in await db.scan(
            f"SELECT * FROM obligations WHERE incident_id IN ({marks}) ORDER BY id", ids
        ):
            by_incident[o["incident_id"]].append(o)
    return [incident_view(r, by_incident[r["id"]], cfg) for r in rows]


async def most_urgent(db: Database, cfg: Config, limit: int) -> dict[str, Any]:
    """Active incidents, the most urgent first: the earliest deadline still to be met (a
    breached one is earlier than any open one), then those with none, newest first.  For
    the duty officer's start page, where the incident that needs action must not drop out
    of sight below a hundred newer ones."""
    (total,) = await db.scan("SELECT COUNT(*) FROM incidents WHERE status = 'active'")
    rows = await db.scan(
        "WITH pending AS (SELECT incident_id, MIN(deadline) AS due FROM obligations"
        " WHERE status IN ('open', 'breached') AND met_at IS NULL GROUP BY incident_id)"
        " SELECT i.* FROM incidents i LEFT JOIN pending p ON p.incident_id = i.id"
        " WHERE i.status = 'active'"
        " ORDER BY p.due IS NULL, p.due, i.declared_at DESC, i.id DESC LIMIT ?",
        (limit,),
    )
    return {"total": total[0] if total else 0, "items": await _with_obligations(db, cfg, rows)}


async def notifications(db: Database, cfg: Config, incident_id: str) -> list[dict[str, Any]]:
    await incident(db, cfg, incident_id)  # 404 for an unknown incident
    # A failed message that no longer matters is shown so at once, before the dispatcher
    # settles it at its next round's time.
    rows = await db.scan(
        f"SELECT n.*, o.kind AS obligation_kind, ({WHY_MOOT}) AS moot FROM notifications n"
        " LEFT JOIN obligations o ON o.id = n.obligation_id"
        " WHERE n.incident_id = ? ORDER BY n.id",
        (incident_id,),
    )
    attempts: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
    if rows:
        for a in await db.scan(
            "SELECT a.* FROM attempts a JOIN notifications n ON n.id = a.notification_id"
            " WHERE n.incident_id = ? ORDER BY a.id",
            (incident_id,),
        ):
            attempts[a["notification_id"]].append(attempt_view(a, cfg))
    return [notification_view(r, attempts[r["id"]], cfg) for r in rows]


async def timeline(db: Database, cfg: Config, incident_id: str) -> list[dict[str, Any]]:
    """The incident's history from its audit entries, oldest first."""
    await incident(db, cfg, incident_id)
    rows = await db.scan(
        "SELECT seq, at, actor, action, data FROM audit_log WHERE subject = ? ORDER BY seq",
        (incident_id,),
    )
    return [timeline_entry(r, cfg) for r in rows]


async def accountability_records(
    db: Database,
    cfg: Config,
    *,
    incident_id: str | None = None,
    unit: str | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    where, params = [], []
    for column, value in (("incident_id", incident_id), ("unit", unit), ("status", status)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = await db.scan(f"SELECT * FROM accountability_records{clause} ORDER BY id", params)
    return [record_view(r, cfg) for r in rows]


async def accountability_record(db: Database, cfg: Config, record_id: int) -> dict[str, Any]:
    row = await db.fetchone("SELECT * FROM accountability_records WHERE id = ?", (record_id,))
    if row is None:
        raise NotFound(
            "record_not_found",
            f"找不到问责记录 {record_id}",
            f"no accountability record {record_id}",
        )
    view = record_view(row, cfg)
    told = await db.scan(
        "SELECT person_id, kind, status, sent_at, sent_channel, acked_at FROM notifications"
        " WHERE obligation_id = ? ORDER BY id",
        (row["obligation_id"],),
    )
    view["notifications"] = [told_view(n, cfg) for n in told]
    return view


def _t(value: str | None, cfg: Config) -> str | None:
    return iso_local(from_db(value), cfg.tz)


async def alert_signals(db: Database, cfg: Config, incident_ids: list[str]) -> dict[str, Any]:
    """What the duty officer's console shows beside the clocks, for each incident: who was told
    by each obligation's latest alert and whether they acknowledged it, and the channels
    whose latest try for this incident failed (with what it means, see engine.failures)."""
    out: dict[str, Any] = {i: {"told": {}, "failing": []} for i in incident_ids}
    if not incident_ids:
        return out
    marks = ",".join("?" * len(incident_ids))
    latest = await db.scan(
        "SELECT n.incident_id, n.obligation_id, n.person_id, n.created_at,"
        " MAX(n.acked_at) AS acked_at FROM notifications n"
        " JOIN (SELECT obligation_id, MAX(created_at) AS at FROM notifications"
        f"       WHERE incident_id IN ({marks}) AND obligation_id IS NOT NULL"
        "       GROUP BY obligation_id) l"
        " ON l.obligation_id = n.obligation_id AND l.at = n.created_at"
        " GROUP BY n.obligation_id, n.person_id ORDER BY MIN(n.id)",
        incident_ids,
    )
    for r in latest:
        person = cfg.person(r["person_id"])
        out[r["incident_id"]]["told"].setdefault(r["obligation_id"], []).append(
            {
                "person": r["person_id"],
                "name": person.name if person else r["person_id"],
                "at": _t(r["created_at"], cfg),
                "acknowledged_at": _t(r["acked_at"], cfg),
            }
        )
    failing = await db.scan(
        "SELECT n.incident_id, a.channel, a.outcome, a.error, a.finished_at FROM attempts a"
        " JOIN notifications n ON n.id = a.notification_id WHERE a.id IN ("
        "   SELECT MAX(a2.id) FROM attempts a2 JOIN notifications n2 ON n2.id = a2.notification_id"
        f"  WHERE n2.incident_id IN ({marks}) AND a2.outcome != 'started'"
        "   GROUP BY n2.incident_id, a2.channel)"
        " AND a.outcome IN ('error', 'unknown') ORDER BY a.channel",
        incident_ids,
    )
    for r in failing:
        out[r["incident_id"]]["failing"].append(attempt_view(r, cfg) | {"channel": r["channel"]})
    return out


async def milestones(db: Database, cfg: Config, incident_id: str) -> dict[str, list[Any]]:
    """An incident's releases and press conferences, oldest first, as the incident page
    shows them (times in the configured zone)."""
    releases = await db.scan(
        "SELECT id, kind, published_at, url, checklist, recorded_late, recorded_by FROM releases"
        " WHERE incident_id = ? ORDER BY published_at, id",
        (incident_id,),
    )
    conferences = await db.scan(
        "SELECT id, status, scheduled_at, held_at, venue, spokesperson, principal_leader_spoke,"
        " recorded_late FROM press_conferences WHERE incident_id = ? ORDER BY id",
        (incident_id,),
    )
    return {
        "releases": [
            {
                "id": r["id"],
                "kind": r["kind"],
                "published_at": _t(r["published_at"], cfg),
                "url": r["url"],
                "checklist": json.loads(r["checklist"] or "{}"),
                "recorded_late": bool(r["recorded_late"]),
            }
            for r in releases
        ],
        "press_conferences": [
            {
                "id": p["id"],
                "status": p["status"],
                "scheduled_at": _t(p["scheduled_at"], cfg),
                "held_at": _t(p["held_at"], cfg),
                "venue": p["venue"],
                "spokesperson": p["spokesperson"],
                "recorded_late": bool(p["recorded_late"]),
            }
            for p in conferences
        ],
    }
