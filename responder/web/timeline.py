"""An incident's timeline as a person reads it: every alert fired, message attempt (with what a
channel's error means), acknowledgement, milestone, level change and close — newest first, in
the configured zone to the second, in the page's language.

Built from the audit entries (``queries.timeline``) and the messages with their attempts
(``queries.notifications``); nothing is read here that the API does not give too.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from responder.config import Config
from responder.engine.failures import explain
from responder.policy.rules import LEVEL_NAMES
from responder.timeutil import format_duration, local
from responder.views import STEP_KIND_NAMES, channel_words
from responder.web.layout import pick


def _second(value: str | None, cfg: Config) -> tuple[str, str]:
    """(sort key, shown): the time to the second, local, never microseconds."""
    if not value:
        return "", "—"
    t = local(datetime.fromisoformat(value.replace("Z", "+00:00")), cfg.tz)
    return t.isoformat(), t.strftime("%Y-%m-%d %H:%M:%S")


def _person(cfg: Config, person_id: str) -> str:
    p = cfg.person(person_id)
    return p.name if p else person_id


def _who(cfg: Config, actor: str, lang: str) -> str:
    kind, _, name = actor.partition(":")
    if kind == "person":
        return _person(cfg, name)
    if kind == "user":
        return name
    return pick(lang, "系统", "the service")


def _late(met: list[dict[str, Any]], lang: str) -> str:
    """What a milestone recorded after its deadline means."""
    out = []
    for m in met:
        if m["status"] == "breached":
            over = format_duration_s(m["overrun_s"], lang)
            out.append(
                pick(
                    lang,
                    f"晚于时限 {over}:属超时完成,超时记录保留,由审核人处理",
                    f"{over} after the deadline: done late; the breach stays on record for the"
                    " reviewers",
                )
            )
        elif m["recorded_late"]:
            out.append(pick(lang, "按时完成,但在时限过后才录入", "done in time, entered late"))
    return ";".join(out) if lang == "zh" else "; ".join(out)


def format_duration_s(seconds: int, lang: str) -> str:
    return format_duration(timedelta(seconds=seconds), lang)


def _audit(
    e: dict[str, Any], cfg: Config, lang: str, names: dict[str, tuple[str, str]]
) -> tuple[str, str]:
    """(what happened, a detail) for one audit entry."""
    d, action = e["data"], e["action"]
    sep = pick(lang, "、", ", ")
    if action == "incident.declared":
        level = d.get("level", "")
        return (
            pick(
                lang,
                f"申报事件:{level}级({LEVEL_NAMES.get(level, '')})",
                f"declared: level {level}",
            ),
            pick(lang, "演练", "drill") if d.get("drill") else "",
        )
    if action in ("release.authoritative", "release.follow_up"):
        _, at = _second(d.get("published_at"), cfg)
        what = (
            pick(lang, "记录权威信息发布", "authoritative release recorded")
            if action == "release.authoritative"
            else pick(lang, "记录持续发布", "follow-up release recorded")
        )
        return f"{what}({pick(lang, '发布于', 'published')} {at})", _late(d.get("met", []), lang)
    if action == "press_conference.scheduled":
        _, at = _second(d.get("scheduled_at"), cfg)
        return pick(lang, f"安排新闻发布会:{at}", f"press conference scheduled for {at}"), d.get(
            "venue", ""
        )
    if action == "press_conference.rescheduled":
        _, at = _second(d.get("scheduled_at"), cfg)
        return pick(lang, f"新闻发布会改期至 {at}", f"press conference moved to {at}"), d.get(
            "reason", ""
        )
    if action == "press_conference.held":
        _, at = _second(d.get("held_at"), cfg)
        return (
            pick(lang, f"记录新闻发布会已举行({at})", f"press conference held at {at}"),
            _late(d.get("met", []), lang),
        )
    if action == "incident.level_changed":
        return (
            pick(lang, f"级别由 {d.get('from')}级 调整为 {d.get('to')}级", f"level changed from {d.get('from')} to {d.get('to')}"),
            d.get("reason", ""),
        )  # fmt: skip
    if action == "incident.closed":
        return pick(lang, "事件结束", "incident closed"), d.get("reason", "")
    if action == "steps.fired":
        duty = pick(lang, *names.get(d.get("obligation", ""), (d.get("obligation", ""),) * 2))
        told = sep.join(_person(cfg, p) for p in d.get("told", []))
        what = pick(lang, f"发出提醒:{duty}", f"alert sent: {duty}")
        if d.get("breached"):
            what += pick(lang, "(已超时)", " (overdue)")
        return what, pick(lang, f"通知:{told}", f"to: {told}") if told else pick(
            lang, "无人可通知", "nobody to tell"
        )
    if action == "notification.acknowledged":
        return pick(lang, f"{_who(cfg, e['actor'], lang)} 确认收到提醒", f"{_who(cfg, e['actor'], lang)} acknowledged"), ""  # fmt: skip
    if action == "notification.failed":
        zh, en = explain(d.get("error"))
        return (
            pick(lang, f"发给{_person(cfg, d.get('person', ''))}的消息在所有渠道都未能送达", f"the message to {_person(cfg, d.get('person', ''))} failed on every channel"),
            pick(lang, zh or "", en or ""),
        )  # fmt: skip
    return action, ""


def _attempts(n: dict[str, Any], cfg: Config, lang: str) -> list[dict[str, Any]]:
    out = []
    kind = pick(lang, *STEP_KIND_NAMES.get(n["kind"], (n["kind"], n["kind"])))
    for a in n["attempts"]:
        key, at = _second(a["finished_at"] or a["started_at"], cfg)
        channel = channel_words(a["channel"], lang)
        to = f"{channel} → {n['person_name']}"
        if a["outcome"] == "sent":
            what, detail, css = pick(lang, f"{to}:已发出", f"{to}: sent"), kind, "sent"
        elif a["outcome"] == "started":
            what, detail, css = pick(lang, f"{to}:发送中", f"{to}: sending"), kind, "sending"
        else:
            what = pick(lang, f"{to}:发送失败", f"{to}: failed")
            detail = pick(lang, a["error_message"] or "", a["error_message_en"] or "")
            css = "failed"
        out.append({"key": key, "at": at, "what": what, "detail": detail, "kind": css})
    return out


def timeline(
    entries: list[dict[str, Any]],
    notifications: list[dict[str, Any]],
    cfg: Config,
    lang: str,
    names: dict[str, tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Every event of the incident, newest first."""
    names = names or {}
    events: list[dict[str, Any]] = []
    for e in entries:
        key, at = _second(e["at"], cfg)
        what, detail = _audit(e, cfg, lang, names)
        # Who did it, when a person at a desk did (the service's own steps need no name, and
        # an acknowledgement says whose it was).
        who = e["actor"].removeprefix("user:") if e["actor"].startswith("user:") else ""
        events.append(
            {
                "key": key,
                "order": e["seq"],
                "at": at,
                "what": what,
                "detail": detail,
                "who": who,
                "kind": e["action"].replace(".", "-"),
            }
        )
    for n in notifications:
        for a in _attempts(n, cfg, lang):
            # Sent after the alert that queued it, within the same second as often as not.
            events.append({**a, "order": 2**62, "who": ""})
    events.sort(key=lambda ev: (ev["key"], ev["order"]), reverse=True)
    return events
