"""Read-only questions the API, the pages and the reports ask.  Every answer is JSON-ready,
with times in the configured zone and contacts masked."""

from __future__ import annotations

import json
from typing import Any

from responder.config import Config
from responder.engine.failures import explain
from responder.engine.outbox import WHY_MOOT
from responder.errors import NotFound
from responder.models import CATEGORIES
from responder.policy.rules import LEVEL_NAMES, LEVEL_NAMES_EN
from responder.store import Database
from responder.timeutil import from_db, iso_local, show


def _t(value: str | None, cfg: Config) -> str | None:
    return iso_local(from_db(value), cfg.tz)


def mask(value: str | None) -> str | None:
    """'+8613800000001' → '+86138****0001'; 'wangfang@example.gov.cn' → 'wa****@example.gov.cn'."""
    if not value:
        return value
    if "@" in value:
        name, _, domain = value.partition("@")
        return name[:2] + "****@" + domain
    if len(value) <= 6:
        return "****"
    return value[:-8] + "****" + value[-4:] if len(value) > 8 else value[:2] + "****"


def obligation_view(r: Any, cfg: Config) -> dict[str, Any]:
    return {
        "id": r["id"],
        "kind": r["kind"],
        "seq": r["seq"],
        "name": r["name"],
        "name_en": r["name_en"],
        "level": r["level"],
        "rule_set": r["rule_set_id"],
        "clock_start": r["clock_start_kind"],
        "clock_start_at": _t(r["clock_start_at"], cfg),
        "within_s": r["within_s"],
        "deadline": _t(r["deadline"], cfg),
        "status": r["status"],
        "met_at": _t(r["met_at"], cfg),
        "recorded_late": bool(r["recorded_late"]),
        "breached_at": _t(r["breached_at"], cfg),
        "waived_reason": r["waived_reason"],
    }


def incident_view(r: Any, obligations: list[Any], cfg: Config) -> dict[str, Any]:
    category = CATEGORIES.get(r["category"], (r["category"], r["category"]))
    return {
        "id": r["id"],
        "title": r["title"],
        "category": r["category"],
        "category_name": category[0],
        "level": r["level"],
        "level_name": LEVEL_NAMES[r["level"]],
        "level_name_en": LEVEL_NAMES_EN[r["level"]],
        "occurred_at": _t(r["occurred_at"], cfg),
        "declared_at": _t(r["declared_at"], cfg),
        "learned_at": _t(r["learned_at"], cfg),
        "location": r["location"],
        "summary": r["summary"],
        "lead_unit": r["lead_unit"],
        "co_units": json.loads(r["co_units"]),
        "drill": bool(r["drill"]),
        "status": r["status"],
        "rule_set": r["rule_set_id"],
        "declared_by": r["declared_by"],
        "closed_at": _t(r["closed_at"], cfg),
        "close_reason": r["close_reason"],
        "obligations": [obligation_view(o, cfg) for o in obligations],
    }


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


def _explained(field: str, error: str | None) -> dict[str, str | None]:
    """The error in words for people, beside the technical text (see engine.failures)."""
    zh, en = explain(error)
    return {f"{field}_message": zh, f"{field}_message_en": en}


# Why a message that failed on every channel is tried no more (outbox.WHY_MOOT), in words.
RETRY_ENDED = {
    "acknowledged": ("已确认收到", "acknowledged"),
    "obligation met": ("该项义务已完成", "the obligation was met"),
    "obligation waived": ("该项义务已豁免", "the obligation was waived"),
    "incident closed": ("事件已关闭", "the incident was closed"),
    "a later alert was delivered": ("此人已收到之后的提醒", "a later alert reached the person"),
    "delivered on another channel": ("已经由其他渠道送达", "delivered on another channel"),
    "expired": ("已过24小时", "24 hours have passed"),
}


def delivery_state(
    status: str, rounds: int, retry_at: str | None, ended: str | None, cfg: Config
) -> dict[str, Any]:
    """A message's delivery as the incident's notifications show it: a failed one says
    whether and when it is tried again, or why no more ("failed on every channel, retrying
    at T"), Chinese first."""
    zh = en = None
    if status == "failed" and retry_at:
        at = show(from_db(retry_at), cfg.tz)
        zh, en = f"所有渠道均未送达,将于 {at} 重试", f"failed on every channel, retrying at {at}"
    elif status == "failed" and ended:
        why_zh, why_en = RETRY_ENDED.get(ended, (ended, ended))
        zh, en = (
            f"所有渠道均未送达;不再重试:{why_zh}",
            f"failed on every channel; no more tries: {why_en}",
        )
    elif status == "failed":
        zh, en = "所有渠道均未送达", "failed on every channel"
    elif rounds and status in ("queued", "sending"):
        zh = f"所有渠道均未送达({rounds} 轮),正在重试"
        en = f"failed on every channel ({rounds} round{'s' * (rounds > 1)}); being tried again"
    return {
        "rounds_failed": rounds,
        "retry_at": iso_local(from_db(retry_at), cfg.tz) if status == "failed" else None,
        "retry_ended": ended if status == "failed" and not retry_at else None,
        "delivery_message": zh,
        "delivery_message_en": en,
    }


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
            attempts[a["notification_id"]].append(
                {
                    "channel": a["channel"],
                    "started_at": _t(a["started_at"], cfg),
                    "finished_at": _t(a["finished_at"], cfg),
                    "outcome": a["outcome"],
                    "error": a["error"],
                    **_explained("error", a["error"]),
                }
            )
    out = []
    for r in rows:
        person = cfg.person(r["person_id"])
        out.append(
            {
                "id": r["id"],
                "obligation": r["obligation_kind"],
                "kind": r["kind"],
                "person": r["person_id"],
                "person_name": person.name if person else r["person_id"],
                "phone": mask(person.phone) if person else None,
                "email": mask(person.email) if person else None,
                "channels": json.loads(r["channels"]),
                "status": r["status"],
                "sent_channel": r["sent_channel"],
                "created_at": _t(r["created_at"], cfg),
                "sent_at": _t(r["sent_at"], cfg),
                "acknowledged_at": _t(r["acked_at"], cfg),
                "last_error": r["last_error"],
                **_explained("last_error", r["last_error"]),
                **delivery_state(
                    r["status"],
                    r["rounds"],
                    None if r["moot"] else r["retry_at"],
                    r["retry_ended"] or (r["moot"] if r["retry_at"] else None),
                    cfg,
                ),
                "attempts": attempts[r["id"]],
            }
        )
    return out


async def timeline(db: Database, cfg: Config, incident_id: str) -> list[dict[str, Any]]:
    """The incident's history from its audit entries, oldest first."""
    await incident(db, cfg, incident_id)
    rows = await db.scan(
        "SELECT seq, at, actor, action, data FROM audit_log WHERE subject = ? ORDER BY seq",
        (incident_id,),
    )
    return [
        {
            "seq": r["seq"],
            "at": _t(r["at"], cfg),
            "actor": r["actor"],
            "action": r["action"],
            "data": json.loads(r["data"]),
        }
        for r in rows
    ]


def record_view(r: Any, cfg: Config) -> dict[str, Any]:
    return {
        "id": r["id"],
        "incident_id": r["incident_id"],
        "obligation_id": r["obligation_id"],
        "unit": r["unit"],
        "responsible_person": r["responsible_person"],
        "deadline": _t(r["deadline"], cfg),
        "breached_at": _t(r["breached_at"], cfg),
        "met_at": _t(r["met_at"], cfg),
        "overrun_s": r["overrun_s"],
        "evidence": json.loads(r["evidence"]),
        "proposed_measure": r["proposed_measure"],
        "decided_measure": r["decided_measure"],
        "decision_reason": r["decision_reason"],
        "decided_by": r["decided_by"],
        "decided_at": _t(r["decided_at"], cfg),
        "status": r["status"],
    }


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
    view["notifications"] = [
        {
            "person": n["person_id"],
            "kind": n["kind"],
            "status": n["status"],
            "channel": n["sent_channel"],
            "sent_at": _t(n["sent_at"], cfg),
            "acknowledged_at": _t(n["acked_at"], cfg),
        }
        for n in told
    ]
    return view
