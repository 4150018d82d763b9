"""How things look from outside: plans and store rows as JSON-ready dicts, in the configured zone,
contacts masked.

The API, the pages, the CLI and the reports all show the same facts the same way.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from responder.config import Config
from responder.engine.failures import explain
from responder.models import CATEGORIES
from responder.policy.planner import Facts, Plan, plan_declaration
from responder.policy.rules import LEVEL_NAMES, LEVEL_NAMES_EN, RuleSet, rule_set_in_force
from responder.timeutil import format_duration, from_db, iso_local, show

STEP_KIND_NAMES = {
    "notice": ("立案通知", "notice"),
    "reminder": ("提醒", "reminder"),
    "deadline": ("到期(超时告警)", "deadline (breach alert)"),
    "catch_up": ("补发(合并已过时的提醒)", "catch-up (collapsed past steps)"),
    "repeat": ("超时后重复", "repeat after deadline"),
}


def plan_view(
    plan: Plan,
    rules: RuleSet | None,
    level: str,
    occurred_at: datetime,
    now: datetime,
    tz: ZoneInfo,
) -> dict[str, Any]:
    return {
        "level": level,
        "level_name": LEVEL_NAMES[level],
        "level_name_en": LEVEL_NAMES_EN[level],
        "occurred_at": iso_local(occurred_at, tz),
        "declared_at": iso_local(now, tz),
        "timezone": str(tz),
        "rule_set": {"id": rules.id, "title": rules.title, "title_en": rules.title_en}
        if rules
        else None,
        # Obligations that start later: each release starts the clock for the next follow-up.
        "after_release": [
            {
                "kind": r.kind,
                "name": r.name,
                "name_en": r.name_en,
                "within": format_duration(r.within, "en"),
                "within_s": int(r.within.total_seconds()),
            }
            for r in (rules.for_level(level) if rules else ())
            if r.clock_start == "previous_release"
        ],
        "obligations": [
            {
                "kind": o.kind,
                "seq": o.seq,
                "name": o.name,
                "name_en": o.name_en,
                "clock_start": o.clock_start_kind,
                "clock_start_at": iso_local(o.clock_start_at, tz),
                "within": format_duration(o.within, "en"),
                "within_s": int(o.within.total_seconds()),
                "deadline": iso_local(o.deadline, tz),
                "status": o.status,
            }
            for o in plan.obligations
        ],
        "steps": [
            {
                "obligation": s.obligation_kind,
                "seq": s.obligation_seq,
                "name": s.name,
                "kind": s.kind,
                "due_at": iso_local(s.due_at, tz),
                "nominal_at": iso_local(s.nominal_at, tz),
                "audience": list(s.audience),
                "channels": list(s.channels),
                "breach": s.is_deadline,
                "repeat_every_s": int(s.repeat_every.total_seconds()) if s.repeat_every else None,
                "collapsed": list(s.collapsed),
            }
            for s in sorted(plan.steps, key=lambda s: (s.due_at, s.obligation_kind))
        ],
    }


def plan_text(view: dict[str, Any], lang: str = "zh") -> str:
    """The plan as a duty officer reads it before declaring."""
    zh = lang == "zh"
    lines = []
    rs = view["rule_set"]
    lvl = (
        f"{view['level']} 级({view['level_name']})"
        if zh
        else f"level {view['level']} ({view['level_name_en']})"
    )
    lines.append(("事件级别:" if zh else "Level: ") + lvl)
    lines.append(("发生时间:" if zh else "Occurred: ") + view["occurred_at"])
    lines.append(
        ("适用规则:" if zh else "Rule set: ")
        + (f"{rs['title' if zh else 'title_en'] or rs['title']} [{rs['id']}]" if rs else "—")
    )
    if not view["obligations"] and not rs:  # not "this level has none": no rules at all then
        lines.append(
            "发生时间不在任何规则集的生效期内,没有发布时限;请核对发生时间。"
            if zh
            else "No rule set was in force when it occurred: no deadlines. Check the time."
        )
        return "\n".join(lines) + "\n"
    if not view["obligations"]:
        lines.append(
            "该级别没有发布时限要求。" if zh else "No publication deadlines apply at this level."
        )
        return "\n".join(lines) + "\n"
    lines.append("")
    lines.append("时限:" if zh else "Deadlines:")
    for o in view["obligations"]:
        name = o["name"] if zh else o["name_en"]
        flag = ("(已超时)" if zh else " (already breached)") if o["status"] == "breached" else ""
        lines.append(f"  {o['deadline']}  {name}  [{o['within']} / {o['clock_start']}]{flag}")
    for r in view["after_release"]:
        name = r["name"] if zh else r["name_en"]
        lines.append(
            f"  发布权威信息后,每次发布起 {r['within']} 内:{name}"
            if zh
            else f"  after each release, within {r['within']}: {name}"
        )
    lines.append("")
    lines.append("提醒与升级:" if zh else "Alert steps:")
    for s in view["steps"]:
        kind = STEP_KIND_NAMES.get(s["kind"], (s["kind"], s["kind"]))[0 if zh else 1]
        extra = ""
        if s["repeat_every_s"]:
            extra += f"  (+{s['repeat_every_s'] // 60} min ×)"
        if s["collapsed"]:
            extra += "  [" + ", ".join(s["collapsed"]) + "]"
        lines.append(
            f"  {s['due_at']}  {s['obligation']:<22} {s['name']:<9} {kind}  → {', '.join(s['audience'])}{extra}"
        )
    return "\n".join(lines) + "\n"


# -- a plan before declaring ---------------------------------------------------------------------


def preview(
    cfg: Config, level: str, occurred_at: datetime, declared_at: datetime
) -> dict[str, Any]:
    """What a declaration would plan (the API's ``GET /plan``, ``responder plan``, the
    declare form): the rule set in force when it occurred, its deadlines and every step."""
    rules = rule_set_in_force(cfg.rule_sets, occurred_at)
    facts = Facts(level, occurred_at, declared_at)
    plan = plan_declaration(facts, rules, declared_at) if rules else Plan()
    return plan_view(plan, rules, level, occurred_at, declared_at, cfg.tz)


# -- store rows ----------------------------------------------------------------------------------


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


def _explained(field: str, error: str | None) -> dict[str, str | None]:
    """The error in words for people, beside the technical text (see engine.failures)."""
    zh, en = explain(error)
    return {f"{field}_message": zh, f"{field}_message_en": en}


def attempt_view(a: Any, cfg: Config) -> dict[str, Any]:
    return {
        "channel": a["channel"],
        "started_at": _t(a["started_at"], cfg),
        "finished_at": _t(a["finished_at"], cfg),
        "outcome": a["outcome"],
        "error": a["error"],
        **_explained("error", a["error"]),
    }


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


def notification_view(r: Any, attempts: list[dict[str, Any]], cfg: Config) -> dict[str, Any]:
    """One message as the incident shows it; ``r`` carries ``moot``: why a failed message that
    is still to be tried again no longer matters (outbox.WHY_MOOT), shown at once, before the
    dispatcher settles it at its next round's time."""
    person = cfg.person(r["person_id"])
    return {
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
        "attempts": attempts,
    }


def timeline_entry(r: Any, cfg: Config) -> dict[str, Any]:
    return {
        "seq": r["seq"],
        "at": _t(r["at"], cfg),
        "actor": r["actor"],
        "action": r["action"],
        "data": json.loads(r["data"]),
    }


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


def told_view(n: Any, cfg: Config) -> dict[str, Any]:
    """Who was told about a breached obligation, on which channel, and whether they
    acknowledged (an accountability record's evidence)."""
    return {
        "person": n["person_id"],
        "kind": n["kind"],
        "status": n["status"],
        "channel": n["sent_channel"],
        "sent_at": _t(n["sent_at"], cfg),
        "acknowledged_at": _t(n["acked_at"], cfg),
    }
