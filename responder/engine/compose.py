"""Composing one message: the facts of a notification, formatted for its recipient, and the
channel address it goes to.

1. :func:`facts` reads the incidents and obligations a batch of notifications speaks of, and
   the obligations each one carries besides its own (one message per person and incident at
   one moment: see :func:`.fire.queue_merged`).
2. :func:`build` turns one notification and its facts into the template context: times in
   the configured zone, durations as people say them, the action asked of the recipient —
   for each obligation the message tells of (``items``, the most urgent first; the top-level
   keys are the first's).  Time left / overdue is computed when the message is *sent*, so a
   message that waited for a retry still tells the truth; an obligation met meanwhile is left
   out of it.
3. :func:`message` renders it for the channel (:mod:`.messages`) and fills the channel's
   apprise URL from the person's contacts: ``(url, title, body)``, ready to send.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from responder.config import Config, Person
from responder.engine.apprise_call import with_idempotency_key, with_read_timeout
from responder.engine.failures import CHANNEL_GONE, PERSON_GONE
from responder.engine.messages import channel_kind, render
from responder.models import CATEGORIES
from responder.policy.rules import LEVEL_NAMES, LEVEL_NAMES_EN
from responder.rows import Notification
from responder.secret import ack_token
from responder.store import Database
from responder.timeutil import format_duration, from_db, local, show

# ("incidents", id) / ("obligations", id) -> row; ("carried", notification id) -> the rows
# that notification carries (each another obligation's part of the same message).
Facts = dict[tuple[str, object], Any]
# apprise waits this much longer than alerts.send_timeout for a gateway's answer: the send
# timeout decides (next channel), not apprise's read timeout (same channel again).
READ_MARGIN = 5.0

ACTIONS = {
    "authoritative_release": (
        "请立即组织发布权威信息",
        "Publish the authoritative information now",
    ),
    "press_conference": ("请尽快组织召开新闻发布会", "Hold the press conference"),
    "follow_up_release": ("请发布事件最新进展", "Publish the next update"),
    "correction": ("请按期完成整改并提交整改报告", "Complete the correction and send its report"),
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
    "correction": (
        "整改期限已过,请立即提交整改报告",
        "The correction deadline has passed: send the correction report now",
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


def brief(dt: datetime, cfg: Config, lang: str, now: datetime) -> str:
    """A deadline as a message listing several writes it: the time alone today, "次日" /
    "tomorrow" before the time tomorrow (both in the configured zone), else as :func:`short`."""
    t, today = local(dt, cfg.tz), local(now, cfg.tz).date()
    if t.date() == today:
        return f"{t:%H:%M}"
    if (t.date() - today).days == 1:
        return f"tomorrow {t:%H:%M}" if lang == "en" else f"次日{t:%H:%M}"
    return short(dt, cfg, lang)


def spoken(dt: datetime, cfg: Config, lang: str) -> str:
    t = local(dt, cfg.tz)
    if lang == "en":
        return t.strftime("%H:%M on %B %d").replace(" 0", " ")
    return f"{t.month}月{t.day}日{t.hour}时{t.minute:02d}分"


def build(
    n: Notification,
    incident: Any,
    obligation: Any | None,
    cfg: Config,
    person: Person,
    ack_url: str,
    now: datetime,
    carried: list[tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    """The template context for one notification (see templates/messages/); ``carried``, the
    (kind, obligation row) of each other obligation the message tells of."""
    carried = carried or []
    lang = person.language
    en = lang == "en"
    saved = n.context
    if incident is None:  # the watchdog speaking about the service itself
        return {
            "title": "",  # no incident: never shown as if the service were one
            "step_kind": n.kind,
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
        "step_kind": n.kind,
        "collapsed": saved.get("collapsed", []),
        "ack_url": ack_url,
        "recipient_name": person.name,
    }
    if obligation is None:  # a watchdog message about the service itself
        ctx["action"] = saved.get("action_en" if en else "action", "")
        return ctx
    duties = [_duty(n.kind, obligation, cfg, lang, now)]
    duties += [_duty(kind, ob, cfg, lang, now) for kind, ob in carried]
    # An obligation met or waived since the message was queued is no longer news (its own
    # carried row was cancelled then); the message goes for the others.
    obligations = [obligation, *(ob for _, ob in carried)]
    items = [d for d, ob in zip(duties, obligations, strict=True) if not _done(ob)] or duties[:1]
    ctx.update(items[0])
    ctx["items"] = items
    ctx["breached"] = any(d["breached"] for d in items)
    return ctx


def _done(obligation: Any) -> bool:
    """Met or waived: nothing left to tell of it."""
    met = "met_at" in obligation.keys() and obligation["met_at"] is not None
    return met or obligation["status"] in ("met", "waived")


def _duty(kind_told: str, obligation: Any, cfg: Config, lang: str, now: datetime) -> dict[str, Any]:
    """What a message says of one obligation: its deadline, its state now, what to do."""
    en = lang == "en"
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
    breached = state == "overdue" or kind_told in ("deadline", "repeat")
    breached = breached or obligation["status"] == "breached"
    actions = OVERDUE_ACTIONS if breached else ACTIONS
    return {
        "obligation": obligation["name_en"] if en else obligation["name"],
        "basis": _basis(cfg, obligation["rule_set_id"]),
        "deadline": show(deadline, cfg.tz),
        "deadline_short": short(deadline, cfg, lang),
        "deadline_brief": brief(deadline, cfg, lang, now),
        "deadline_spoken": spoken(deadline, cfg, lang),
        "state": state,
        "remaining": format_duration(left, lang) if state == "upcoming" else "",
        "overdue": format_duration(-left, lang) if state == "overdue" else "",
        "action": actions.get(kind, ("请尽快处理", "Act now"))[1 if en else 0],
        "breached": breached,
    }


async def facts(db: Database, notifications: list[Notification]) -> Facts:
    """The incidents and obligations a batch of notifications speaks of, and the rows each
    carries: three queries for the batch instead of three per message."""
    out: Facts = {}
    carried = await _rows(db, "notifications", "carried_by", [n.id for n in notifications])
    for row in carried:
        if row["status"] != "cancelled":  # its obligation met, or acknowledged elsewhere
            out.setdefault(("carried", row["carried_by"]), []).append(row)
    for table, ids in (
        ("incidents", {n.incident_id for n in notifications}),
        ("obligations", {n.obligation_id for n in notifications}
         | {r["obligation_id"] for r in carried}),
    ):  # fmt: skip
        for row in await _rows(db, table, "id", ids):
            out[(table, row["id"])] = row
    return out


async def _rows(db: Database, table: str, column: str, keys: Iterable[Any]) -> list[Any]:
    known = sorted({k for k in keys if k is not None})
    rows: list[Any] = []
    for i in range(0, len(known), 500):
        chunk = known[i : i + 500]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT * FROM {table} WHERE {column} IN ({marks}) ORDER BY id"
        rows += await db.fetchall(sql, chunk)
    return rows


def message(
    cfg: Config, secret: bytes, n: Notification, facts: Facts, now: datetime
) -> tuple[str, str, str]:
    """``(url, title, body)`` for one notification on its current channel.  A person or a
    channel since removed from the config is a LookupError: the message cannot be built."""
    channel = n.channel
    person = cfg.person(n.person_id)
    if person is None:
        raise LookupError(f"{PERSON_GONE}: {n.person_id}")
    template = cfg.channels.get(channel)
    if template is None:
        raise LookupError(f"{CHANNEL_GONE}: {channel}")
    incident = facts.get(("incidents", n.incident_id))
    obligation = facts.get(("obligations", n.obligation_id))
    ack_url = f"{cfg.service.public_url}/ack/{ack_token(secret, n.ack_nonce)}"
    carried = [(c["kind"], facts[("obligations", c["obligation_id"])])
               for c in facts.get(("carried", n.id), [])]  # fmt: skip
    ctx = build(n, incident, obligation, cfg, person, ack_url, now, carried)
    rendered = render(channel_kind(channel), person.language, ctx)
    url = with_idempotency_key(channel_url(template, person), f"{n.id}-{channel}")
    url = with_read_timeout(url, cfg.alerts.send_timeout.total_seconds() + READ_MARGIN)
    return url, rendered.title, rendered.body
