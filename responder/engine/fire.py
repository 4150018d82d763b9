"""Firing due steps: the scheduler's one transaction per batch.

For each obligation with steps due (:func:`plan_obligation`):

1. Mark its due steps fired — conditionally (``status = 'pending'``), so a step cancelled
   by a milestone in the meantime is not fired, and no step fires twice.
2. If one of them is the deadline step, breach the obligation and open its accountability
   record (:func:`responder.obligations.breach`, itself conditional).
3. Resolve the union of their audiences to people.  Several steps due at once (a late
   declaration, or the service coming back after downtime) give each person ONE catch-up
   part for the obligation, not a storm.  People who acknowledged get no more repeats.
4. If no one at all answers the audiences (a lead unit without its head, a unit since removed),
   tell the administrators instead.
5. If a step repeats (at the deadline, every 30 min until met), store the next repeat.
6. One audit entry records what fired and who was told.

Then, for the whole batch (:func:`queue_merged`), what the obligations of one incident have
to tell one person at this moment becomes ONE message listing each of them (a declaration:
the release and the press conference; a late one: the breach of the first and the notice of
the second), not one per obligation.  Each obligation keeps its own notification row — its
evidence, its acknowledgement — and the message's other rows are carried by the first (the
most urgent: a breach first), which alone the dispatcher sends.  All of it is written in the
firing's transaction: nothing is lost and nothing told twice after a crash.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from responder import obligations
from responder.audience import channels_for, resolve
from responder.config import Config
from responder.engine import outbox
from responder.rows import Step
from responder.store import Database, audit
from responder.timeutil import from_db, to_db

log = logging.getLogger("responder.scheduler")
Fired = tuple[int, list[float]]  # notifications queued, lateness (s) of each step fired


@dataclass(frozen=True)
class Part:
    """What one obligation has to tell one person at this firing, before the batch merges the
    parts of one incident for one person into one message (:func:`queue_merged`)."""

    incident_id: str
    obligation_id: int
    deadline: datetime
    step_id: int
    person_id: str
    order: list[str]  # the person's channels, the step's preferred ones first
    every_channel: bool  # on each channel at once (the breach alert), not a failover walk
    kind: str
    context: dict[str, Any]
    priority: int


async def due_steps(db: Database, now: datetime, limit: int) -> list[Step]:
    """Due steps of the incidents of the (about) ``limit`` earliest ones — all of each
    incident's due steps, so that a large backlog never splits an obligation's catch-up, nor
    what an incident's obligations tell one person at once, into two messages."""
    rows = await db.fetchall(
        "SELECT * FROM steps WHERE status = 'pending' AND due_at <= ? AND incident_id IN"
        " (SELECT incident_id FROM steps WHERE status = 'pending' AND due_at <= ?"
        " ORDER BY due_at LIMIT ?) ORDER BY due_at, id",
        (to_db(now), to_db(now), limit),
    )
    return [Step.of(r) for r in rows]


def _acked_people(tx: sqlite3.Connection, obligation_id: int) -> set[str]:
    """People who acknowledged a message about this obligation at or after its breach.

    An acknowledgement of an earlier reminder ("I know, we are on it") does not silence the
    repeats after a breach: the news changed, and they must hear it."""
    cur = tx.execute(
        "SELECT DISTINCT n.person_id FROM notifications n JOIN obligations o"
        " ON o.id = n.obligation_id WHERE n.obligation_id = ? AND n.acked_at IS NOT NULL"
        " AND o.breached_at IS NOT NULL AND n.acked_at >= o.breached_at",
        (obligation_id,),
    )
    return {r[0] for r in cur.fetchall()}


def fire_batch(
    tx: sqlite3.Connection,
    cfg: Config,
    secret: bytes,
    groups: list[list[Step]],
    now: datetime,
) -> Fired:
    """Fire the due steps of several obligations (each group one obligation's), inside the
    caller's transaction, and queue what they tell people: one message per person, incident
    and channel walk."""
    parts: list[Part] = []
    queued = 0
    lateness: list[float] = []
    for steps in groups:
        told, admins, late = plan_obligation(tx, cfg, secret, steps, now)
        parts += told
        queued += admins
        lateness += late
    return queued + queue_merged(tx, secret, parts, now), lateness


def fire_obligation(
    tx: sqlite3.Connection,
    cfg: Config,
    secret: bytes,
    steps: list[Step],
    now: datetime,
) -> Fired:
    """Fire one obligation's due steps (inside the caller's transaction)."""
    return fire_batch(tx, cfg, secret, [steps], now)


def plan_obligation(
    tx: sqlite3.Connection,
    cfg: Config,
    secret: bytes,
    steps: list[Step],
    now: datetime,
) -> tuple[list[Part], int, list[float]]:
    """Fire one obligation's due steps: what it tells each person (queued by the caller), the
    administrators' messages queued when it reaches nobody, and the lateness of its steps."""
    won = obligations.fire(tx, [s.id for s in steps], now)
    steps = [s for s in steps if s.id in won]
    if not steps:
        return [], 0, []
    lateness = [(now - s.due_at).total_seconds() for s in steps]
    obligation_id = steps[0].obligation_id
    cur = tx.execute(
        "SELECT o.*, i.title, i.level AS incident_level, i.category, i.location, i.occurred_at,"
        " i.lead_unit, i.co_units, i.drill, i.status AS incident_status"
        " FROM obligations o JOIN incidents i ON i.id = o.incident_id WHERE o.id = ?",
        (obligation_id,),
    )
    ob = cur.fetchone()
    assert ob is not None
    # A correction's clock (限期整改) runs on after the incident closed: the review comes later.
    over = ob["incident_status"] != "active" and ob["kind"] != obligations.CORRECTION
    if over or ob["met_at"] is not None or ob["status"] == "waived":
        return [], 0, lateness  # nothing to say any more; the steps are spent

    breached_now = False
    if any(s.is_deadline for s in steps):
        breached_now = obligations.breach(tx, cfg, obligation_id, now) is not None

    acked = _acked_people(tx, obligation_id)
    co_units = json.loads(ob["co_units"])
    per_person: dict[str, dict[str, Any]] = {}
    addressed = False  # anyone at all answers the steps' audiences (acknowledged or not)
    for s in steps:
        audience = resolve(s.audience, cfg, ob["lead_unit"], co_units)
        addressed = addressed or bool(audience)
        for person in audience:
            if s.kind == "repeat" and person.id in acked:
                continue
            entry = per_person.setdefault(
                person.id, {"person": person, "steps": [], "channels": [], "all": False}
            )
            entry["all"] = entry["all"] or s.all_channels
            entry["steps"].append(s)
            entry["channels"].extend(c for c in s.channels if c not in entry["channels"])

    # Breached, by this firing or before it (a declaration already past its deadline): its
    # messages go before routine reminders, whatever their kind (a catch-up of repeats).
    breached = breached_now or ob["status"] == "breached"
    deadline = from_db(ob["deadline"])
    assert deadline is not None
    parts: list[Part] = []
    for entry in per_person.values():
        person_steps = entry["steps"]
        last = max(person_steps, key=lambda s: (s.nominal_at, s.id))
        collapsed: list[str] = []
        for s in person_steps:
            collapsed.extend(s.collapsed or [s.name])
        kind = "catch_up" if len(person_steps) > 1 else last.kind
        if any(s.is_deadline for s in person_steps) and kind == "catch_up":
            kind = "deadline"  # the breach is the news; the rest is folded into it
        parts.append(
            Part(
                incident_id=ob["incident_id"],
                obligation_id=obligation_id,
                deadline=deadline,
                step_id=last.id,
                person_id=entry["person"].id,
                order=channels_for(entry["person"], entry["channels"]),
                every_channel=entry["all"],
                kind=kind,
                context={"step": last.name, "collapsed": collapsed if len(collapsed) > 1 else []},
                priority=outbox.priority_of(kind, breached),
            )
        )

    admins = 0 if addressed else _tell_admins_nobody_was_told(tx, cfg, secret, ob, steps, now)

    repeating = next((s for s in steps if s.repeat_s), None)
    if repeating is not None:  # one next repeat per obligation, however many fired together
        obligations.repeat(tx, repeating, deadline, now)

    audit.append(
        tx,
        now,
        "scheduler",
        "steps.fired",
        ob["incident_id"],
        {
            "obligation": ob["kind"],
            "seq": ob["seq"],
            "steps": [s.name for s in steps],
            "breached": breached,
            "told": sorted(per_person),
        },
    )
    log.info(
        "fired %s for %s %s: %d people told%s",
        "+".join(s.name for s in steps),
        ob["incident_id"],
        ob["kind"],
        len(parts),
        ", obligation BREACHED" if breached_now else "",
    )
    return parts, admins, lateness


def queue_merged(tx: sqlite3.Connection, secret: bytes, parts: list[Part], now: datetime) -> int:
    """Queue the parts fired together: those of one incident for one person (over the same
    channels) become one message.  Its carrier is the most urgent part (a breach before a
    reminder, then the earlier deadline); it takes that part's walk down the channels, or goes
    on each channel at once if any part must, and is claimed as early as its most urgent part.
    The other parts are queued as rows it carries, one beside each message sent.  Returns the
    number of messages to send."""
    together: dict[tuple[str, str, frozenset[str]], list[Part]] = defaultdict(list)
    for part in parts:
        together[(part.incident_id, part.person_id, frozenset(part.order))].append(part)
    sent = 0
    for group in together.values():
        group.sort(key=lambda p: (p.priority, p.deadline, p.obligation_id))
        first, rest = group[0], group[1:]
        priority = min(p.priority for p in group)
        every = any(p.every_channel for p in group)
        # Failover: one message walking down the person's channels.  All channels: one
        # message per channel at once (the breach alert reaches the phone *and* the mailbox).
        for channels in [[c] for c in first.order] if every else [first.order]:
            carrier = _queue_part(tx, secret, first, channels, priority, now)
            for part in rest:
                _queue_part(tx, secret, part, channels, priority, now, carried_by=carrier)
            sent += 1
    return sent


def _queue_part(
    tx: sqlite3.Connection,
    secret: bytes,
    part: Part,
    channels: list[str],
    priority: int,
    now: datetime,
    carried_by: int | None = None,
) -> int:
    return outbox.queue(
        tx,
        secret,
        incident_id=part.incident_id,
        obligation_id=part.obligation_id,
        step_id=part.step_id,
        person_id=part.person_id,
        channels=channels,
        kind=part.kind,
        context=part.context,
        now=now,
        priority=priority,
        carried_by=carried_by,
    )


def _tell_admins_nobody_was_told(
    tx: sqlite3.Connection, cfg: Config, secret: bytes, ob: Any, steps: list[Step], now: datetime
) -> int:
    """No one in the config answers the steps' audiences (a lead unit without its head or
    spokesperson, a unit since removed from the config): the step fired and would tell no one
    about a serious emergency.  The administrators hear of it instead of nobody."""
    names = "+".join(s.name for s in steps)
    iid = ob["incident_id"]
    log.warning("fired %s for %s %s: its audience reaches nobody", names, iid, ob["kind"])
    unit = cfg.unit(ob["lead_unit"])  # by name, as people know it; by id if since removed
    zh_unit = unit.name if unit else ob["lead_unit"]
    en_unit = (unit.name_en or unit.name) if unit else ob["lead_unit"]
    return outbox.tell_admins(
        tx,
        cfg,
        secret,
        incident_id=iid,
        # Short: it goes by SMS after the incident's title (see templates/messages/sms.zh.j2).
        zh=f"提醒“{names}”无人可发:牵头单位{zh_unit}无对应人员,请电话通知并补全配置",
        en=f"the alert '{names}' reached nobody: the lead unit, {en_unit}, has no one the rules"
        " address; phone the unit and complete the config",
        now=now,
    )


def by_obligation(steps: list[Step]) -> list[list[Step]]:
    groups: dict[int, list[Step]] = defaultdict(list)
    for s in steps:
        groups[s.obligation_id].append(s)
    return list(groups.values())
