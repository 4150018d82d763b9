"""How things look from outside: plans and store rows as JSON-ready dicts, in the configured zone.

The API, the pages and the CLI all show the same facts the same way.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from responder.policy.planner import Plan
from responder.policy.rules import LEVEL_NAMES, LEVEL_NAMES_EN, RuleSet
from responder.timeutil import format_duration, from_db, iso_local

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


def loads(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


def t(text: str | None, tz: ZoneInfo) -> str | None:
    return iso_local(from_db(text), tz)
