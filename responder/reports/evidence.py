"""The evidence of an obligation: every row the store holds about it, read by SQL and shaped
into one timeline with times — never copied by hand, never edited.

The reads are plain SQL with one parameter (the obligation's id, or the incident's), so the
same text runs inside a write job (a decision seals what it decided on) and on the reader
(a page, a report).  :func:`timeline` is pure: rows in, entries out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from responder.config import Config
from responder.engine.failures import explain
from responder.store import Database
from responder.timeutil import from_db, iso_local, show

Rows = dict[str, list[Any]]

# The evidence of one obligation.  Each query takes the obligation's id, once.
_OF_INCIDENT = "(SELECT incident_id FROM obligations WHERE id = ?)"
OBLIGATION_SQL: dict[str, str] = {
    "incidents": f"SELECT * FROM incidents WHERE id = {_OF_INCIDENT}",
    "obligations": "SELECT * FROM obligations WHERE id = ?",
    "steps": "SELECT * FROM steps WHERE obligation_id = ? ORDER BY due_at, id",
    "notifications": "SELECT * FROM notifications WHERE obligation_id = ? ORDER BY id",
    # A row carried by another obligation's message (one message for several: see
    # engine.fire.queue_merged) has no attempts of its own: its carrier's are its sends.
    "attempts": "SELECT a.* FROM attempts a WHERE a.notification_id IN"
    " (SELECT COALESCE(n.carried_by, n.id) FROM notifications n WHERE n.obligation_id = ?)"
    " ORDER BY a.id",
    "releases": f"SELECT * FROM releases WHERE incident_id = {_OF_INCIDENT}"
    " AND EXISTS (SELECT 1 FROM obligations WHERE id = ? AND milestone LIKE '%release')"
    " ORDER BY published_at, id",
    "press_conferences": f"SELECT * FROM press_conferences WHERE incident_id = {_OF_INCIDENT}"
    " AND EXISTS (SELECT 1 FROM obligations WHERE id = ? AND milestone = 'press_conference')"
    " ORDER BY id",
    "level_changes": f"SELECT * FROM level_changes WHERE incident_id = {_OF_INCIDENT} ORDER BY id",
}
# The whole incident's (the per-incident report).  Each takes the incident's id, once.
INCIDENT_SQL: dict[str, str] = {
    "incidents": "SELECT * FROM incidents WHERE id = ?",
    "obligations": "SELECT * FROM obligations WHERE incident_id = ? ORDER BY id",
    "steps": "SELECT * FROM steps WHERE incident_id = ? ORDER BY due_at, id",
    "notifications": "SELECT * FROM notifications WHERE incident_id = ? ORDER BY id",
    "attempts": "SELECT a.* FROM attempts a JOIN notifications n ON n.id = a.notification_id"
    " WHERE n.incident_id = ? ORDER BY a.id",
    "releases": "SELECT * FROM releases WHERE incident_id = ? ORDER BY published_at, id",
    "press_conferences": "SELECT * FROM press_conferences WHERE incident_id = ? ORDER BY id",
    "level_changes": "SELECT * FROM level_changes WHERE incident_id = ? ORDER BY id",
    "accountability_records": "SELECT * FROM accountability_records WHERE incident_id = ?"
    " ORDER BY id",
    "accountability_decisions": "SELECT d.* FROM accountability_decisions d"
    " JOIN accountability_records r ON r.id = d.record_id WHERE r.incident_id = ? ORDER BY d.id",
    "accountability_interviews": "SELECT v.* FROM accountability_interviews v"
    " JOIN accountability_records r ON r.id = v.record_id WHERE r.incident_id = ? ORDER BY v.id",
    "accountability_corrections": "SELECT c.* FROM accountability_corrections c"
    " JOIN accountability_records r ON r.id = c.record_id WHERE r.incident_id = ? ORDER BY c.id",
}


def _params(sql: str, key: object) -> tuple[object, ...]:
    return (key,) * sql.count("?")


def read_in(tx: sqlite3.Connection, queries: Mapping[str, str], key: object) -> Rows:
    """The rows, inside a write job (the same snapshot as the change it goes with)."""
    return {name: tx.execute(sql, _params(sql, key)).fetchall() for name, sql in queries.items()}


async def read(db: Database, queries: Mapping[str, str], key: object) -> Rows:
    """The rows, on the reader (a report may cover many messages)."""
    return {name: await db.scan(sql, _params(sql, key)) for name, sql in queries.items()}


# -- the timeline ------------------------------------------------------------------------------


def _person(cfg: Config, person_id: str) -> str:
    p = cfg.person(person_id)
    return f"{p.name}({person_id})" if p else person_id


def _entry(
    cfg: Config, at: str | None, source: str, zh: str, en: str, obligation: int | None = None
) -> dict[str, Any]:
    t = from_db(at)
    return {
        "at": iso_local(t, cfg.tz),
        "at_local": show(t, cfg.tz),
        "source": source,  # table:id — the row it comes from
        "obligation_id": obligation,
        "what": zh,
        "what_en": en,
    }


def _obligation_entries(cfg: Config, o: Any) -> list[dict[str, Any]]:
    src, oid = f"obligations:{o['id']}", o["id"]
    out = [
        _entry(
            cfg,
            o["clock_start_at"],
            src,
            f"{o['name']}:开始计时({o['clock_start_kind']})",
            f"{o['name_en']}: clock started ({o['clock_start_kind']})",
            oid,
        ),
        _entry(cfg, o["deadline"], src, f"{o['name']}:时限", f"{o['name_en']}: deadline", oid),
    ]
    if o["met_at"]:
        out.append(_entry(cfg, o["met_at"], src, f"{o['name']}:完成", f"{o['name_en']}: done", oid))
        out.append(
            _entry(
                cfg,
                o["met_recorded_at"],
                src,
                f"{o['name']}:完成情况录入系统",
                f"{o['name_en']}: done, recorded in the system",
                oid,
            )
        )
    if o["waived_at"]:
        out.append(
            _entry(
                cfg,
                o["waived_at"],
                src,
                f"{o['name']}:免除({o['waived_reason']})",
                f"{o['name_en']}: waived ({o['waived_reason']})",
                oid,
            )
        )
    return out


def _step_entries(cfg: Config, s: Any) -> list[dict[str, Any]]:
    src, oid = f"steps:{s['id']}", s["obligation_id"]
    if s["status"] == "fired":
        return [
            _entry(
                cfg,
                s["fired_at"],
                src,
                f"提醒时点“{s['name']}”触发",
                f"alert step '{s['name']}' fired",
                oid,
            )
        ]
    if s["status"] == "cancelled":
        return [
            _entry(
                cfg,
                s["cancelled_at"],
                src,
                f"提醒时点“{s['name']}”取消",
                f"alert step '{s['name']}' cancelled",
                oid,
            )
        ]
    return [
        _entry(
            cfg,
            s["due_at"],
            src,
            f"提醒时点“{s['name']}”待触发",
            f"alert step '{s['name']}' pending",
            oid,
        )
    ]


def _notification_entries(cfg: Config, n: Any) -> list[dict[str, Any]]:
    src, oid, who = f"notifications:{n['id']}", n["obligation_id"], _person(cfg, n["person_id"])
    carrier = n["carried_by"]
    out = [
        _entry(
            cfg,
            n["created_at"],
            src,
            f"消息({n['kind']})排队发给 {who}" + (f",与消息 {carrier} 合并发送" if carrier else ""),
            f"message ({n['kind']}) queued for {who}"
            + (f", sent as part of message {carrier}" if carrier else ""),
            oid,
        )
    ]
    if n["sent_at"]:
        out.append(
            _entry(
                cfg,
                n["sent_at"],
                src,
                f"经 {n['sent_channel']} 送达 {who} 的网关",
                f"delivered to {who}'s gateway by {n['sent_channel']}",
                oid,
            )
        )
    elif n["status"] in ("failed", "cancelled"):
        zh, en = explain(n["last_error"])
        state_zh = "发送失败" if n["status"] == "failed" else "已取消"
        out.append(
            _entry(
                cfg,
                n["created_at"],
                src,
                f"发给 {who} 的消息{state_zh}:{zh or n['last_error']}",
                f"message to {who} {n['status']}: {en or n['last_error']}",
                oid,
            )
        )
    if n["acked_at"]:
        out.append(_entry(cfg, n["acked_at"], src, f"{who} 确认收到", f"{who} acknowledged", oid))
    return out


def _attempt_entries(cfg: Config, a: Any, obligation_of: Mapping[int, Any]) -> list[dict[str, Any]]:
    oid = obligation_of.get(a["notification_id"])
    zh, en = explain(a["error"])
    outcome_zh = {"sent": "成功", "error": "失败", "unknown": "结果未知", "started": "进行中"}
    return [
        _entry(
            cfg,
            a["finished_at"] or a["started_at"],
            f"attempts:{a['id']}",
            f"经 {a['channel']} 发送(消息 {a['notification_id']}):"
            f"{outcome_zh.get(a['outcome'], a['outcome'])}{(',' + zh) if zh else ''}",
            f"sent by {a['channel']} (message {a['notification_id']}): {a['outcome']}"
            f"{(', ' + en) if en else ''}",
            oid,
        )
    ]


def _milestone_entries(cfg: Config, rows: Rows) -> list[dict[str, Any]]:
    out = []
    for r in rows.get("releases", []):
        kind = "权威信息发布" if r["kind"] == "authoritative" else "持续发布"
        out.append(
            _entry(
                cfg,
                r["published_at"],
                f"releases:{r['id']}",
                f"{kind}",
                f"{r['kind']} release published",
            )
        )
        out.append(
            _entry(
                cfg,
                r["recorded_at"],
                f"releases:{r['id']}",
                f"{kind}由 {r['recorded_by']} 录入",
                f"release recorded by {r['recorded_by']}",
            )
        )
    for p in rows.get("press_conferences", []):
        if p["held_at"]:
            out.append(
                _entry(
                    cfg,
                    p["held_at"],
                    f"press_conferences:{p['id']}",
                    "举行新闻发布会",
                    "press conference held",
                )
            )
        out.append(
            _entry(
                cfg,
                p["recorded_at"],
                f"press_conferences:{p['id']}",
                f"新闻发布会({p['status']})由 {p['recorded_by']} 录入",
                f"press conference ({p['status']}) recorded by {p['recorded_by']}",
            )
        )
    for c in rows.get("level_changes", []):
        out.append(
            _entry(
                cfg,
                c["changed_at"],
                f"level_changes:{c['id']}",
                f"级别 {c['from_level']} → {c['to_level']}:{c['reason']}",
                f"level {c['from_level']} → {c['to_level']}: {c['reason']}",
            )
        )
    return out


def timeline(cfg: Config, rows: Rows) -> list[dict[str, Any]]:
    """Every event the rows show, oldest first (ties in the order the rows were written)."""
    obligation_of = {n["id"]: n["obligation_id"] for n in rows.get("notifications", [])}
    for n in rows.get("notifications", []):  # a carrier's sends are its carried rows' too
        if n["carried_by"] is not None:
            obligation_of.setdefault(n["carried_by"], n["obligation_id"])
    entries: list[dict[str, Any]] = []
    for i in rows.get("incidents", []):
        entries.append(
            _entry(cfg, i["occurred_at"], f"incidents:{i['id']}", "事件发生", "occurred")
        )
        entries.append(
            _entry(
                cfg,
                i["declared_at"],
                f"incidents:{i['id']}",
                f"事件由 {i['declared_by']} 申报",
                f"declared by {i['declared_by']}",
            )
        )
        if i["closed_at"]:
            entries.append(
                _entry(
                    cfg,
                    i["closed_at"],
                    f"incidents:{i['id']}",
                    f"事件关闭:{i['close_reason']}",
                    f"closed: {i['close_reason']}",
                )
            )
    for o in rows.get("obligations", []):
        entries += _obligation_entries(cfg, o)
    for s in rows.get("steps", []):
        entries += _step_entries(cfg, s)
    for n in rows.get("notifications", []):
        entries += _notification_entries(cfg, n)
    for a in rows.get("attempts", []):
        entries += _attempt_entries(cfg, a, obligation_of)
    entries += _milestone_entries(cfg, rows)
    dated = [e for e in entries if e["at"] is not None]
    # Stable: events at the same instant keep the order in which their rows were written.
    return sorted(dated, key=lambda e: datetime.fromisoformat(e["at"]))


def summary(cfg: Config, rows: Rows) -> dict[str, Any]:
    """Counts a reviewer reads first: who was told, on which channel, who acknowledged."""
    every: Sequence[Any] = rows.get("notifications", [])
    # A message carried by another here (merged: one message, several duties) is counted once,
    # as its carrier; carried by a message about another duty, it stands for that message.
    ids = {n["id"] for n in every}
    notes = [n for n in every if n["carried_by"] is None or n["carried_by"] not in ids]
    return {
        "steps_fired": sum(s["status"] == "fired" for s in rows.get("steps", [])),
        "messages": len(notes),
        "delivered": sum(n["status"] == "sent" for n in notes),
        "failed": sum(n["status"] == "failed" for n in notes),
        "attempts": len(rows.get("attempts", [])),
        "acknowledged": sum(n["acked_at"] is not None for n in notes),
        "people_told": sorted({_person(cfg, n["person_id"]) for n in notes}),
        "people_acknowledged": sorted(
            {_person(cfg, n["person_id"]) for n in notes if n["acked_at"]}
        ),
        "channels_failed": sorted(
            {a["channel"] for a in rows.get("attempts", []) if a["outcome"] == "error"}
        ),
    }
