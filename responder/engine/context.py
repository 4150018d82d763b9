"""What a message says: the facts of one notification, formatted for its recipient.

Times in the configured zone, durations as people say them, and the action asked of the
recipient.  Time left / overdue is computed when the message is *sent*, so a message that
waited for a retry still tells the truth.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

from responder.config import Config, Person
from responder.models import CATEGORIES
from responder.policy.rules import LEVEL_NAMES, LEVEL_NAMES_EN
from responder.timeutil import format_duration, from_db, local, show

ACTIONS = {
    "authoritative_release": (
        "请立即组织发布权威信息",
        "Publish the authoritative information now",
    ),
    "press_conference": ("请尽快组织召开新闻发布会", "Hold the press conference"),
    "follow_up_release": ("请发布事件最新进展", "Publish the next update"),
}
OVERDUE_ACTIONS = {
    "authoritative_release": (
        "已超过发布时限,请立即发布权威信息并报告原因",
        "The deadline has passed: publish now and report why it was late",
    ),
    "press_conference": (
        "已超过发布会时限,请立即召开新闻发布会并报告原因",
        "The deadline has passed: hold the press conference now and report why",
    ),
    "follow_up_release": (
        "持续发布已超时,请立即发布最新进展",
        "The follow-up is overdue: publish the latest update now",
    ),
}


def channel_url(template: str, person: Person) -> str:
    """Fill a channel's apprise URL template from a person's contacts, URL-quoted."""
    fields = {k: quote(v, safe="@") for k, v in person.fields().items()}
    return template.format(**fields)


def _basis(cfg: Config, rule_set_id: str) -> str:
    rules = next((r for r in cfg.rule_sets if r.id == rule_set_id), None)
    return (rules.basis or rules.title) if rules else rule_set_id


def short(dt: datetime, cfg: Config, lang: str) -> str:
    """A deadline as an SMS writes it: local, with the date (it may be tomorrow's), no year
    or offset — every recipient reads the configured zone's time; the email carries both."""
    t = local(dt, cfg.tz)
    if lang == "en":
        return f"{t.day} {t:%b %H:%M}"
    return f"{t.month}月{t.day}日{t:%H:%M}"


def spoken(dt: datetime, cfg: Config, lang: str) -> str:
    t = local(dt, cfg.tz)
    if lang == "en":
        return t.strftime("%H:%M on %B %d").replace(" 0", " ")
    return f"{t.month}月{t.day}日{t.hour}时{t.minute:02d}分"


def build(
    row: Any,
    incident: Any,
    obligation: Any | None,
    cfg: Config,
    person: Person,
    ack_url: str,
    now: datetime,
) -> dict[str, Any]:
    """The template context for one notification (see templates/messages/)."""
    lang = person.language
    en = lang == "en"
    saved = json.loads(row["context"])
    if incident is None:  # the watchdog speaking about the service itself
        return {
            "title": "",  # no incident: never shown as if the service were one
            "step_kind": row["kind"],
            "ack_url": ack_url,
            "recipient_name": person.name,
            "action": saved.get("action_en" if en else "action", ""),
        }
    category = CATEGORIES.get(incident["category"], (incident["category"],) * 2)
    unit = cfg.unit(incident["lead_unit"])
    ctx: dict[str, Any] = {
        "drill": bool(incident["drill"]),
        "incident_id": incident["id"],
        "title": incident["title"],
        "level": incident["level"],
        "level_name": (LEVEL_NAMES_EN if en else LEVEL_NAMES)[incident["level"]],
        "category_name": category[1 if en else 0],
        "location": incident["location"],
        "occurred_at": show(from_db(incident["occurred_at"]), cfg.tz),
        "lead_unit": (unit.name_en or unit.name) if unit and en else unit.name if unit else "",
        "step_kind": row["kind"],
        "collapsed": saved.get("collapsed", []),
        "ack_url": ack_url,
        "recipient_name": person.name,
    }
    if obligation is None:  # a watchdog message about the service itself
        ctx["action"] = saved.get("action_en" if en else "action", "")
        return ctx
    deadline = from_db(obligation["deadline"])
    assert deadline is not None
    left = deadline - now
    kind = obligation["kind"]
    if left.total_seconds() > 60:
        state = "upcoming"
    elif left.total_seconds() >= -60:
        state = "due_now"
    else:
        state = "overdue"
    breached = state == "overdue" or row["kind"] in ("deadline", "repeat")
    breached = breached or obligation["status"] == "breached"
    actions = OVERDUE_ACTIONS if breached else ACTIONS
    ctx.update(
        obligation=obligation["name_en"] if en else obligation["name"],
        basis=_basis(cfg, obligation["rule_set_id"]),
        deadline=show(deadline, cfg.tz),
        deadline_short=short(deadline, cfg, lang),
        deadline_spoken=spoken(deadline, cfg, lang),
        state=state,
        remaining=format_duration(left, lang) if state == "upcoming" else "",
        overdue=format_duration(-left, lang) if state == "overdue" else "",
        action=actions.get(kind, ("请尽快处理", "Act now"))[1 if en else 0],
    )
    return ctx
