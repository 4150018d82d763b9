"""How things look from outside: plans and store rows as JSON-ready dicts, in the configured zone,
contacts masked.

The API, the pages, the CLI and the reports all show the same facts the same way.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from responder import audience
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


# -- a plan in words ------------------------------------------------------------------------------

ROLE_WORDS = {
    "head": ("负责人", "head"),
    "spokesperson": ("新闻发言人", "spokesperson"),
    "duty_officer": ("值班员", "duty officer"),
    "leader": ("分管领导", "leader"),
    "publicity": ("宣传人员", "publicity officer"),
    "admin": ("系统管理员", "administrator"),
    "reviewer": ("审核人", "reviewer"),
}
_WHERE = {
    "lead": ("牵头单位", "the lead unit"),
    "co": ("协办单位", "the other units"),
    "involved": ("牵头和协办单位", "the lead and other units"),
}
CHANNEL_WORDS = {
    "sms": ("短信", "SMS"),
    "voice": ("语音电话", "voice call"),
    "email": ("邮件", "email"),
    "chat": ("即时通讯", "chat"),
}


def _say(lang: str, zh: str, en: str) -> str:
    return en if lang == "en" else zh


def role_words(role: str, lang: str) -> str:
    return _say(lang, *ROLE_WORDS.get(role, (role, role)))


def channel_words(channel: str, lang: str) -> str:
    return _say(lang, *CHANNEL_WORDS.get(channel, (channel, channel)))


def unit_words(cfg: Config, unit_id: str, lang: str) -> str:
    unit = cfg.unit(unit_id)
    return _say(lang, unit.name, unit.name_en or unit.name) if unit else unit_id


def audience_words(item: str, cfg: Config, lang: str) -> str:
    """``head@lead`` → 牵头单位的负责人; ``duty_officer@#office`` → 值班员(区政府办公室 陈静):
    who a step speaks to, with the people where that does not depend on the incident."""
    role, selector = item.split("@", 1)
    who = role_words(role, lang)
    if selector in _WHERE:
        where = _WHERE[selector]
        return _say(lang, f"{where[0]}的{who}", f"{who} of {where[1]}")
    units = audience.units_for(selector, cfg, "", [])
    people = [p for p in cfg.people if p.unit in units and role in p.roles]
    names = _say(lang, "、", ", ").join(
        f"{unit_words(cfg, p.unit, lang)} {p.name}" for p in people
    ) or _say(lang, "无人", "nobody")
    return _say(lang, f"{who}({names})", f"{who} ({names})")


def step_when_words(step: dict[str, Any], deadline: datetime | None, lang: str) -> str:
    """What a planned step is, in words: the notice, a reminder N before, the breach alert."""
    kind = step["kind"]
    if kind == "catch_up" and step["breach"]:  # declared after the deadline
        return _say(lang, "已超时:立即补发超时告警", "already overdue: the breach alert, at once")
    if kind == "catch_up":
        return _say(lang, "立即补发已过时的提醒", "the reminders already past, at once")
    if kind == "notice":
        return _say(lang, *STEP_KIND_NAMES[kind])
    nominal = datetime.fromisoformat(step["nominal_at"])
    if deadline is not None and nominal < deadline:
        before = format_duration(deadline - nominal, lang)
        return _say(lang, f"时限前{before}提醒", f"reminder {before} before the deadline")
    return _say(lang, "到期:超时告警", "at the deadline: breach alert")


def steps_in_words(
    view: dict[str, Any],
    cfg: Config,
    lang: str,
    lead_unit: str | None = None,
    co_units: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Each step of a plan (``plan_view``) as a duty officer reads it: the duty, what the step
    is, the people it reaches (by name, when the lead unit is known; else who they are), the
    channels it tries first and how often it repeats."""
    names = {o["kind"]: _say(lang, o["name"], o["name_en"]) for o in view["obligations"]}
    deadlines = {o["kind"]: datetime.fromisoformat(o["deadline"]) for o in view["obligations"]}
    sep = _say(lang, "、", ", ")
    out = []
    for s in view["steps"]:
        if lead_unit is not None:
            people = audience.resolve(s["audience"], cfg, lead_unit, co_units or [])
            told = [
                _say(lang, f"{p.name}({unit_words(cfg, p.unit, lang)})",
                     f"{p.name} ({unit_words(cfg, p.unit, lang)})")
                for p in people
            ]  # fmt: skip
        else:
            told = [audience_words(a, cfg, lang) for a in s["audience"]]
        every = (
            format_duration(timedelta(seconds=s["repeat_every_s"]), lang)
            if s["repeat_every_s"]
            else ""
        )
        out.append(
            {
                "due_at": s["due_at"],
                "obligation": names.get(s["obligation"], s["obligation"]),
                "what": step_when_words(s, deadlines.get(s["obligation"]), lang),
                "breach": s["breach"],
                "people": told,
                "channels": [channel_words(c, lang) for c in s["channels"]],
                "first_by": sep.join(channel_words(c, lang) for c in s["channels"]),
                "repeat": every,
            }
        )
    return out


def plan_text(
    view: dict[str, Any],
    lang: str = "zh",
    cfg: Config | None = None,
    lead_unit: str | None = None,
) -> str:
    """The plan as a duty officer reads it before declaring (``responder plan``): with ``cfg``
    each step says in words whom it reaches — by name when ``lead_unit`` is given."""
    zh = lang == "zh"
    lines = []
    rs = view["rule_set"]
    lvl = (
        f"{view['level']}级({view['level_name']})"
        if zh
        else f"{view['level']} ({view['level_name_en']})"
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
        within = format_duration(timedelta(seconds=o["within_s"]), lang)
        lines.append(
            f"  {o['deadline']}  {name}  [{_say(lang, f'{within}内', f'within {within}')}]{flag}"
        )
    for r in view["after_release"]:
        name = r["name"] if zh else r["name_en"]
        within = format_duration(timedelta(seconds=r["within_s"]), lang)
        lines.append(
            f"  发布权威信息后,每次发布起{within}内:{name}"
            if zh
            else f"  after each release, within {within}: {name}"
        )
    lines.append("")
    lines.append("提醒与升级:" if zh else "Alert steps:")
    if cfg is None:  # without the config, the audiences as the rule set writes them
        for s in view["steps"]:
            kind = STEP_KIND_NAMES.get(s["kind"], (s["kind"], s["kind"]))[0 if zh else 1]
            lines.append(
                f"  {s['due_at']}  {s['obligation']}  {kind}  → {', '.join(s['audience'])}"
            )
        return "\n".join(lines) + "\n"
    sep = _say(lang, "、", ", ")
    for s in steps_in_words(view, cfg, lang, lead_unit):
        extra = []
        if s["first_by"]:
            extra.append(_say(lang, f"先用{s['first_by']}", f"first by {s['first_by']}"))
        if s["repeat"]:
            extra.append(
                _say(
                    lang,
                    f"此后每{s['repeat']}重复,直到完成",
                    f"then every {s['repeat']} until done",
                )
            )
        said = _say(lang, f"({';'.join(extra)})", f" ({'; '.join(extra)})") if extra else ""
        lines.append(f"  {s['due_at']}  {s['obligation']}:{s['what']}{said}" if zh
                     else f"  {s['due_at']}  {s['obligation']}: {s['what']}{said}")  # fmt: skip
        lines.append(f"      → {sep.join(s['people']) or _say(lang, '无人', 'nobody')}")
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
