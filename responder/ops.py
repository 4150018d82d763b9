"""Operations: the one service layer that the API, the pages and the CLI all call.

Each operation checks everything first (and changes nothing when it refuses), then writes its
change, its timers and its audit entry in one transaction, then wakes the scheduler.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from responder.clock import Clock
from responder.config import Config
from responder.engine import audit_head
from responder.errors import BadInput, Conflict, NotFound
from responder.idempotency import Once, remember, replay
from responder.models import (
    ChangeLevel,
    CloseIncident,
    DeclareIncident,
    PressConferenceHeld,
    RecordRelease,
    ReschedulePressConference,
    SchedulePressConference,
)
from responder.policy.planner import (
    Facts,
    PlannedObligation,
    Waived,
    plan_close,
    plan_declaration,
    plan_follow_up,
    plan_level_change,
)
from responder.policy.rules import RuleSet, rule_set_in_force
from responder.store import Database, audit
from responder.store.plans import (
    breach,
    cancel_queued_notifications,
    cancel_steps,
    insert_plan,
    settle_accountability,
)
from responder.timeutil import at_most_now, from_db, show, to_db

log = logging.getLogger("responder.ops")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def _t(row: Any, key: str) -> datetime:
    value = from_db(row[key])
    assert value is not None
    return value


def _follow_up_waived(latest: dict[str, Any]) -> bool:
    """Whether a lowering waived the incident's latest follow-up release obligation."""
    return any(
        r["milestone"] == "follow_up_release" and r["status"] == "waived" for r in latest.values()
    )


class Ops:
    def __init__(
        self, db: Database, cfg: Config, clock: Clock, wake: Callable[[], None] | None = None
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock
        self._wake = wake or (lambda: None)

    def _done(
        self, what: str, incident_id: str, actor: str, once: Once | None, **facts: object
    ) -> None:
        """One log line per change (never a secret: ids, levels and counts only); wake the
        scheduler so new or cancelled timers take effect at once."""
        if once is not None and once.replayed:
            log.info("%s %s by %s: a repeated request, answered again", what, incident_id, actor)
            return
        extra = "".join(f" {k}={v}" for k, v in facts.items())
        log.info("%s %s by %s%s", what, incident_id, actor, extra)
        self._wake()

    async def _commit(
        self, change: Callable[[sqlite3.Connection], T], once: Once | None, incident_id: str
    ) -> T:
        """Run a change in one write transaction.  With ``once`` (a request that carried an
        Idempotency-Key, see :mod:`responder.idempotency`) the key is checked and stored in that
        same transaction: a repeated request changes nothing and gets the first answer.
        ``change`` returns the answer, which must be JSON; for a declaration, the new
        incident's id (``incident_id`` is then empty)."""
        if once is None:
            return await self.db.transact(change)
        now = self.clock.now()

        def keyed(tx: sqlite3.Connection) -> T:
            stored = replay(tx, once)
            if stored is not None:
                return stored  # type: ignore[no-any-return]
            result = change(tx)
            remember(tx, once, incident_id or str(result), result, now)
            return result

        return await self.db.transact(keyed)

    # -- checks ------------------------------------------------------------------------

    def _not_future(self, t: datetime, field: str, now: datetime) -> None:
        if t > now:
            raise BadInput(
                "time_in_future",
                f"{field} 不能晚于当前时间({show(now, self.cfg.tz)})",
                f"{field} cannot be in the future (now is {show(now, self.cfg.tz)})",
            )

    def _clock_ahead(
        self, data: M, fields: tuple[str, ...], now: datetime
    ) -> tuple[M, dict[str, Any]]:
        """``data`` with each of ``fields`` a little ahead of our clock taken as now
        (:data:`~responder.timeutil.CLOCK_SKEW`), and, for the audit entry, what was given."""
        given = {f: t for f in fields if (t := getattr(data, f)) is not None and t > now}
        if not given:
            return data, {}
        taken = data.model_copy(update={f: at_most_now(t, now) for f, t in given.items()})
        return taken, {"given_ahead_of_the_clock": {f: t.isoformat() for f, t in given.items()}}

    def _unit(self, unit_id: str, field: str) -> None:
        if self.cfg.unit(unit_id) is None:
            # The names too: at night a duty officer knows the unit by its name, not its id.
            zh = "、".join(f"{u.id}({u.name})" for u in self.cfg.units)
            en = ", ".join(f"{u.id} ({u.name_en or u.name})" for u in self.cfg.units)
            raise BadInput(
                "unknown_unit",
                f"{field}:未知单位“{unit_id}”(可选:{zh})",
                f"{field}: unknown unit '{unit_id}' (known: {en})",
            )

    def rule_set_for(self, occurred_at: datetime) -> RuleSet | None:
        return rule_set_in_force(self.cfg.rule_sets, occurred_at)

    def _active(self, tx: sqlite3.Connection, incident_id: str) -> Any:
        """The incident, which must exist and not be closed (inside a write job)."""
        row = tx.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            raise NotFound(
                "incident_not_found",
                f"找不到事件 {incident_id}",
                f"no incident {incident_id}",
            )
        if row["status"] == "closed":
            raise Conflict(
                "incident_closed",
                f"事件 {incident_id} 已关闭,不能再修改",
                f"incident {incident_id} is closed and cannot be changed",
            )
        return row

    def _milestone_time(self, t: datetime, field: str, incident: Any, now: datetime) -> None:
        self._not_future(t, field, now)
        occurred = _t(incident, "occurred_at")
        if t < occurred:
            raise BadInput(
                "before_occurrence",
                f"{field} 不能早于事件发生时间({show(occurred, self.cfg.tz)})",
                f"{field} cannot be before the incident occurred ({show(occurred, self.cfg.tz)})",
            )

    # -- declare ---------------------------------------------------------------------

    def _next_id(self, tx: sqlite3.Connection, now: datetime) -> str:
        day = now.astimezone(self.cfg.tz).strftime("%Y%m%d")
        tx.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1)"
            " ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (f"incident:{day}",),
        )
        c = tx.execute("SELECT value FROM counters WHERE name = ?", (f"incident:{day}",))
        row = c.fetchone()
        assert row is not None
        return f"INC-{day}-{row[0]:04d}"

    async def declare(self, data: DeclareIncident, actor: str, once: Once | None = None) -> str:
        """Register an incident and set its clocks running.  Returns the incident id."""
        incident_id = await self._commit(self._declaration(data, actor), once, "")
        self._done(
            "incident declared", incident_id, actor, once, level=data.level, drill=data.drill
        )
        return incident_id

    def _declaration(
        self, data: DeclareIncident, actor: str
    ) -> Callable[[sqlite3.Connection], str]:
        """Check a declaration and plan it; return the write job that records it."""
        now = self.clock.now()
        data, given = self._clock_ahead(data, ("occurred_at", "learned_at"), now)
        self._not_future(data.occurred_at, "occurred_at", now)
        if data.learned_at is not None:
            self._not_future(data.learned_at, "learned_at", now)
            if data.learned_at < data.occurred_at:
                raise BadInput(
                    "learned_before_occurred",
                    "learned_at(获知时间)不能早于事件发生时间",
                    "learned_at cannot be before occurred_at",
                )
        self._unit(data.lead_unit, "lead_unit")
        for u in data.co_units:
            self._unit(u, "co_units")
        rules = self.rule_set_for(data.occurred_at)
        facts = Facts(data.level, data.occurred_at, now, data.learned_at)
        plan = plan_declaration(facts, rules, now) if rules else None
        co_units = list(dict.fromkeys(u for u in data.co_units if u != data.lead_unit))

        def change(tx: sqlite3.Connection) -> str:
            incident_id = self._next_id(tx, now)
            tx.execute(
                "INSERT INTO incidents (id, title, category, level, occurred_at, declared_at,"
                " learned_at, location, summary, lead_unit, co_units, drill, rule_set_id,"
                " declared_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    incident_id,
                    data.title,
                    data.category,
                    data.level,
                    to_db(data.occurred_at),
                    to_db(now),
                    to_db(data.learned_at),
                    data.location,
                    data.summary,
                    data.lead_unit,
                    json.dumps(co_units),
                    int(data.drill),
                    rules.id if rules else None,
                    actor,
                ),
            )
            ids: list[int] = []
            if plan is not None and rules is not None:
                ids = insert_plan(tx, incident_id, rules.id, plan, now)
                for ob_id, ob in zip(ids, plan.obligations, strict=True):
                    if ob.status == "breached":
                        breach(tx, self.cfg, ob_id, now)
            audit.append(
                tx,
                now,
                actor,
                "incident.declared",
                incident_id,
                {
                    **data.model_dump(mode="json"),
                    **given,
                    "rule_set": rules.id if rules else None,
                    "obligations": [
                        {"kind": o.kind, "deadline": to_db(o.deadline), "status": o.status}
                        for o in (plan.obligations if plan else ())
                    ],
                },
            )
            return incident_id

        return change

    # -- milestones ------------------------------------------------------------------

    def _meet(
        self,
        tx: sqlite3.Connection,
        incident_id: str,
        milestone: str,
        happened_at: datetime,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """Meet the oldest unmet obligation of this milestone; cancel its steps.

        Met at the time the milestone *happened*.  Dated before its deadline but typed in
        after it: met, and flagged recorded_late for the reviewers.  Happened after the
        deadline: it stays breached (with an accountability record) and records when it was met.
        """
        cur = tx.execute(
            "SELECT * FROM obligations WHERE incident_id = ? AND milestone = ?"
            " AND status IN ('open', 'breached') AND met_at IS NULL ORDER BY seq LIMIT 1",
            (incident_id, milestone),
        )
        ob = cur.fetchone()
        if ob is None:
            return []
        deadline = _t(ob, "deadline")
        in_time = happened_at <= deadline
        recorded_late = in_time and now > deadline
        if not in_time:
            breach(tx, self.cfg, ob["id"], now)
        tx.execute(
            "UPDATE obligations SET status = ?, met_at = ?, met_recorded_at = ?, recorded_late = ?"
            " WHERE id = ?",
            (
                "met" if in_time else "breached",
                to_db(happened_at),
                to_db(now),
                int(recorded_late),
                ob["id"],
            ),
        )
        settle_accountability(tx, ob["id"], happened_at, recorded_late)
        cancel_steps(tx, ob["id"], now)
        cancel_queued_notifications(tx, ob["id"], now)
        return [
            {
                "obligation": ob["kind"],
                "seq": ob["seq"],
                "status": "met" if in_time else "breached",
                "recorded_late": recorded_late,
                "overrun_s": max(0, int((happened_at - deadline).total_seconds())),
            }
        ]

    def _start_follow_up(
        self, tx: sqlite3.Connection, incident: Any, released_at: datetime, now: datetime
    ) -> list[PlannedObligation]:
        """Start the next follow-up release clock (if the level has one); return what it added."""
        rules = self._rules_of(incident)
        if rules is None:
            return []
        cur = tx.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM obligations"
            " WHERE incident_id = ? AND milestone = 'follow_up_release'",
            (incident["id"],),
        )
        row = cur.fetchone()
        seq = (row[0] if row else 0) + 1
        plan = plan_follow_up(rules, incident["level"], released_at, seq, now)
        ids = insert_plan(tx, incident["id"], rules.id, plan, now)
        for ob_id, ob in zip(ids, plan.obligations, strict=True):
            if ob.status == "breached":
                breach(tx, self.cfg, ob_id, now)
        return list(plan.obligations)

    def _needs_follow_up(self, tx: sqlite3.Connection, incident_id: str) -> bool:
        """Released before, and no release obligation is live (open, or breached and unmet):
        neither a follow-up nor an authoritative release whose recording will start one."""
        cur = tx.execute(
            "SELECT EXISTS (SELECT 1 FROM releases WHERE incident_id = ?),"
            " EXISTS (SELECT 1 FROM obligations WHERE incident_id = ? AND milestone IN"
            " ('follow_up_release', 'authoritative_release')"
            " AND status IN ('open', 'breached') AND met_at IS NULL)",
            (incident_id, incident_id),
        )
        row = cur.fetchone()
        assert row is not None
        return bool(row[0]) and not row[1]

    def _rules_of(self, incident: Any) -> RuleSet | None:
        return next((r for r in self.cfg.rule_sets if r.id == incident["rule_set_id"]), None)

    async def record_release(
        self,
        incident_id: str,
        data: RecordRelease,
        actor: str,
        kind: str = "authoritative",
        once: Once | None = None,
    ) -> dict[str, Any]:
        """Record an authoritative or follow-up release, dated when it actually went out."""
        now = self.clock.now()
        data, given = self._clock_ahead(data, ("published_at",), now)

        def change(tx: sqlite3.Connection) -> dict[str, Any]:
            incident = self._active(tx, incident_id)
            self._milestone_time(data.published_at, "published_at", incident, now)
            deadline_row = self._open_deadline(tx, incident_id, f"{kind}_release")
            if kind == "authoritative":
                cur = tx.execute(
                    "SELECT 1 FROM releases WHERE incident_id = ? AND kind = 'authoritative'",
                    (incident_id,),
                )
                released = cur.fetchone() is not None
                # A second one only when a raise has since opened a new, unmet obligation.
                if released and deadline_row is None:
                    raise Conflict(
                        "already_released",
                        "该事件已记录权威信息发布;后续发布请记录为“持续发布”",
                        "the authoritative release is already recorded; record a follow-up",
                    )
            elif self._open_deadline(tx, incident_id, "authoritative_release"):
                # The first release of a serious incident is the authoritative one: recorded as
                # a follow-up by mistake it would leave the 5 h duty open and alerting.
                raise Conflict(
                    "release_not_recorded",
                    "尚未记录权威信息发布;第一次发布请记录为“发布权威信息”",
                    "the authoritative release is not recorded yet; record the first release as that",
                )
            else:
                self._after_last_release(tx, incident_id, data.published_at)
            same_time = tx.execute(
                "SELECT id FROM releases WHERE incident_id = ? AND published_at = ?",
                (incident_id, to_db(data.published_at)),
            ).fetchone()
            if same_time is not None:
                # A client retrying a request whose answer it lost: recorded twice, a follow-up
                # would meet the next follow-up duty at once, with no new information out.
                when = show(data.published_at, self.cfg.tz)
                raise Conflict(
                    "release_already_recorded",
                    f"该事件 {when} 的发布已记录(发布记录 {same_time[0]}),未重复记录",
                    f"a release published at {when} is already recorded (release {same_time[0]});"
                    " not recorded again",
                )
            recorded_late = deadline_row is not None and data.published_at <= deadline_row < now
            cur = tx.execute(
                "INSERT INTO releases (incident_id, kind, published_at, channels, url, text,"
                " checklist, recorded_at, recorded_by, recorded_late) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    incident_id,
                    kind,
                    to_db(data.published_at),
                    json.dumps(data.channels, ensure_ascii=False),
                    data.url,
                    data.text,
                    data.checklist.model_dump_json(),
                    to_db(now),
                    actor,
                    int(recorded_late),
                ),
            )
            release_id = cur.lastrowid
            met = self._meet(tx, incident_id, f"{kind}_release", data.published_at, now)
            self._start_follow_up(tx, incident, data.published_at, now)
            missing = data.checklist.missing()
            audit.append(
                tx,
                now,
                actor,
                f"release.{kind}",
                incident_id,
                {"release_id": release_id, **data.model_dump(mode="json"), **given, "met": met},
            )
            return {
                "id": release_id,
                "met": met,
                "checklist_missing": missing,
                "recorded_late": recorded_late,
            }

        result = await self._commit(change, once, incident_id)
        self._done(f"{kind} release recorded", incident_id, actor, once, met=len(result["met"]))
        return result

    def _last_release(self, tx: sqlite3.Connection, incident_id: str) -> datetime | None:
        (last,) = tx.execute(
            "SELECT MAX(published_at) FROM releases WHERE incident_id = ?", (incident_id,)
        ).fetchone()
        return from_db(last)

    def _after_last_release(
        self, tx: sqlite3.Connection, incident_id: str, published_at: datetime
    ) -> None:
        """A follow-up goes out after the releases before it: each release starts the next
        follow-up's clock.  Dated before the last one, it would meet a duty whose clock started
        after it, and count the next one back from the past."""
        when = self._last_release(tx, incident_id)
        if when is not None and published_at < when:
            raise Conflict(
                "release_out_of_order",
                f"持续发布的时间须晚于上一次发布({show(when, self.cfg.tz)});请按发布先后记录",
                f"a follow-up must be later than the last release ({show(when, self.cfg.tz)});"
                " record releases in the order they went out",
            )

    def _open_deadline(
        self, tx: sqlite3.Connection, incident_id: str, milestone: str
    ) -> datetime | None:
        cur = tx.execute(
            "SELECT deadline FROM obligations WHERE incident_id = ? AND milestone = ?"
            " AND status IN ('open', 'breached') AND met_at IS NULL ORDER BY seq LIMIT 1",
            (incident_id, milestone),
        )
        row = cur.fetchone()
        return from_db(row["deadline"]) if row else None

    def _conference_time(self, t: datetime, incident: Any, now: datetime) -> None:
        """A press conference is scheduled after the incident, and not in the past."""
        if t < _t(incident, "occurred_at"):
            raise BadInput(
                "before_occurrence",
                "发布会时间不能早于事件发生时间",
                "the press conference cannot be before the incident occurred",
            )
        if t < now:
            raise BadInput(
                "scheduled_in_past",
                "安排的发布会时间已过;如发布会已举行,请记录为“已举行”",
                "that time has passed; if the press conference was held, record it as held",
            )

    async def schedule_press_conference(
        self,
        incident_id: str,
        data: SchedulePressConference,
        actor: str,
        once: Once | None = None,
    ) -> dict[str, Any]:
        now = self.clock.now()

        def change(tx: sqlite3.Connection) -> dict[str, Any]:
            incident = self._active(tx, incident_id)
            self._conference_time(data.scheduled_at, incident, now)
            cur = tx.execute(
                "SELECT id FROM press_conferences WHERE incident_id = ? AND status = 'scheduled'",
                (incident_id,),
            )
            if cur.fetchone():
                raise Conflict(
                    "already_scheduled",
                    "已有一场待举行的新闻发布会;请改期或记录其已举行",
                    "a press conference is already scheduled: reschedule it or record it held",
                )
            cur = tx.execute(
                "INSERT INTO press_conferences (incident_id, status, scheduled_at, venue,"
                " spokesperson, recorded_at, recorded_by) VALUES (?, 'scheduled', ?, ?, ?, ?, ?)",
                (
                    incident_id,
                    to_db(data.scheduled_at),
                    data.venue,
                    data.spokesperson,
                    to_db(now),
                    actor,
                ),
            )
            pc_id = cur.lastrowid
            deadline = self._open_deadline(tx, incident_id, "press_conference")
            audit.append(
                tx,
                now,
                actor,
                "press_conference.scheduled",
                incident_id,
                {"press_conference_id": pc_id, **data.model_dump(mode="json")},
            )
            return {
                "id": pc_id,
                "after_deadline": deadline is not None and data.scheduled_at > deadline,
            }

        return await self._commit(change, once, incident_id)

    async def reschedule_press_conference(
        self,
        incident_id: str,
        pc_id: int,
        data: ReschedulePressConference,
        actor: str,
        once: Once | None = None,
    ) -> dict[str, Any]:
        now = self.clock.now()

        def change(tx: sqlite3.Connection) -> dict[str, Any]:
            incident = self._active(tx, incident_id)
            pc = self._press_conference(tx, incident_id, pc_id)
            self._conference_time(data.scheduled_at, incident, now)
            if pc["status"] != "scheduled":
                raise Conflict(
                    "not_scheduled",
                    "该发布会不是待举行状态,不能改期",
                    "only a scheduled press conference can be rescheduled",
                )
            tx.execute(
                "UPDATE press_conferences SET scheduled_at = ?, venue = COALESCE(?, venue),"
                " spokesperson = COALESCE(?, spokesperson) WHERE id = ?",
                (to_db(data.scheduled_at), data.venue, data.spokesperson, pc_id),
            )
            deadline = self._open_deadline(tx, incident_id, "press_conference")
            audit.append(
                tx,
                now,
                actor,
                "press_conference.rescheduled",
                incident_id,
                {
                    "press_conference_id": pc_id,
                    "from": pc["scheduled_at"],
                    **data.model_dump(mode="json"),
                },
            )
            return {
                "id": pc_id,
                "after_deadline": deadline is not None and data.scheduled_at > deadline,
            }

        return await self._commit(change, once, incident_id)

    def _press_conference(self, tx: sqlite3.Connection, incident_id: str, pc_id: int) -> Any:
        cur = tx.execute(
            "SELECT * FROM press_conferences WHERE id = ? AND incident_id = ?", (pc_id, incident_id)
        )
        pc = cur.fetchone()
        if pc is None:
            raise NotFound(
                "press_conference_not_found",
                f"事件 {incident_id} 没有编号为 {pc_id} 的新闻发布会",
                f"incident {incident_id} has no press conference {pc_id}",
            )
        return pc

    async def press_conference_held(
        self,
        incident_id: str,
        data: PressConferenceHeld,
        actor: str,
        pc_id: int | None = None,
        once: Once | None = None,
    ) -> dict[str, Any]:
        """Record that a press conference was held (scheduled before, or not)."""
        now = self.clock.now()
        data, given = self._clock_ahead(data, ("held_at",), now)

        def change(tx: sqlite3.Connection) -> dict[str, Any]:
            incident = self._active(tx, incident_id)
            self._milestone_time(data.held_at, "held_at", incident, now)
            deadline = self._open_deadline(tx, incident_id, "press_conference")
            recorded_late = deadline is not None and data.held_at <= deadline < now
            same_time = tx.execute(
                "SELECT id FROM press_conferences WHERE incident_id = ? AND status = 'held'"
                " AND held_at = ?",
                (incident_id, to_db(data.held_at)),
            ).fetchone()
            if same_time is not None:
                # A client retrying a request whose answer it lost: recorded twice, the second
                # would meet the next press-conference duty (after a raise) with none held.
                when = show(data.held_at, self.cfg.tz)
                raise Conflict(
                    "already_held",
                    f"{when} 举行的新闻发布会已记录(发布会 {same_time[0]}),未重复记录",
                    f"a press conference held at {when} is already recorded (press conference"
                    f" {same_time[0]}); not recorded again",
                )
            held_id = pc_id
            if held_id is not None:
                pc = self._press_conference(tx, incident_id, held_id)
                if pc["status"] == "held":
                    raise Conflict(
                        "already_held",
                        "该新闻发布会已记录为已举行",
                        "this press conference is already recorded as held",
                    )
                tx.execute(
                    "UPDATE press_conferences SET status = 'held', held_at = ?,"
                    " venue = CASE WHEN ? = '' THEN venue ELSE ? END,"
                    " spokesperson = CASE WHEN ? = '' THEN spokesperson ELSE ? END,"
                    " principal_leader_spoke = ?, notes = ?, recorded_late = ? WHERE id = ?",
                    (
                        to_db(data.held_at),
                        data.venue,
                        data.venue,
                        data.spokesperson,
                        data.spokesperson,
                        int(data.principal_leader_spoke),
                        data.notes,
                        int(recorded_late),
                        held_id,
                    ),
                )
            else:
                cur = tx.execute(
                    "INSERT INTO press_conferences (incident_id, status, held_at, venue, spokesperson,"
                    " principal_leader_spoke, notes, recorded_at, recorded_by, recorded_late)"
                    " VALUES (?, 'held', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        incident_id,
                        to_db(data.held_at),
                        data.venue,
                        data.spokesperson,
                        int(data.principal_leader_spoke),
                        data.notes,
                        to_db(now),
                        actor,
                        int(recorded_late),
                    ),
                )
                held_id = cur.lastrowid
            met = self._meet(tx, incident_id, "press_conference", data.held_at, now)
            audit.append(
                tx,
                now,
                actor,
                "press_conference.held",
                incident_id,
                {
                    "press_conference_id": held_id,
                    **data.model_dump(mode="json"),
                    **given,
                    "met": met,
                },
            )
            return {"id": held_id, "met": met, "recorded_late": recorded_late}

        result = await self._commit(change, once, incident_id)
        self._done("press conference held", incident_id, actor, once, met=len(result["met"]))
        return result

    # -- level and close -------------------------------------------------------------

    def _latest_obligations(self, tx: sqlite3.Connection, incident_id: str) -> dict[str, Any]:
        cur = tx.execute(
            "SELECT * FROM obligations WHERE incident_id = ? ORDER BY kind, seq, id", (incident_id,)
        )
        rows = list(cur.fetchall())
        latest: dict[str, Any] = {}
        for r in rows:
            latest[r["kind"]] = r
        return latest

    async def change_level(
        self, incident_id: str, data: ChangeLevel, actor: str, once: Once | None = None
    ) -> dict[str, Any]:
        """Raise or lower the level, with a reason.  Raising adds obligations; lowering waives."""
        now = self.clock.now()

        def change(tx: sqlite3.Connection) -> dict[str, Any]:
            incident = self._active(tx, incident_id)
            old = incident["level"]
            if data.level == old:
                raise BadInput(
                    "same_level",
                    f"事件已是 {old} 级,无需调整",
                    f"the incident is already level {old}",
                )
            latest = self._latest_obligations(tx, incident_id)
            rules = self._rules_of(incident)
            added: list[str] = []
            waived: list[str] = []
            breached: list[str] = []
            if rules is not None:
                facts = Facts(
                    old,
                    _t(incident, "occurred_at"),
                    _t(incident, "declared_at"),
                    from_db(incident["learned_at"]),
                )
                # An open obligation whose deadline has passed is breached, whether or not the
                # scheduler has fired its deadline step yet: a lowering must not waive a breach.
                existing = {}
                for k, r in latest.items():
                    existing[k] = r["status"]
                    if r["status"] == "open" and _t(r, "deadline") <= now:
                        breach(tx, self.cfg, r["id"], now)
                        existing[k] = "breached"
                        breached.append(k)
                earlier = {
                    k: Waived(r["clock_start_kind"], _t(r, "clock_start_at"), r["seq"])
                    for k, r in latest.items()
                    if r["status"] == "waived"
                }
                change = plan_level_change(facts, data.level, rules, existing, now, now, earlier)
                for kind in change.waive:
                    ob_id = latest[kind]["id"]
                    tx.execute(
                        "UPDATE obligations SET status = 'waived', waived_at = ?, waived_reason = ?"
                        " WHERE id = ? AND status = 'open'",
                        (to_db(now), f"级别由 {old} 调整为 {data.level}:{data.reason}", ob_id),
                    )
                    cancel_steps(tx, ob_id, now)
                    cancel_queued_notifications(tx, ob_id, now)
                    waived.append(kind)
                # A breach stays on record after a lowering, but the new level no longer asks
                # for the duty: its repeats stop.
                for kind, r in latest.items():
                    rule = rules.obligation(kind)
                    if existing[kind] == "breached" and rule and data.level not in rule.levels:
                        cancel_steps(tx, r["id"], now)
                ids = insert_plan(tx, incident_id, rules.id, change.add, now)
                for ob_id, ob in zip(ids, change.add.obligations, strict=True):
                    added.append(ob.kind)
                    if ob.status == "breached":
                        breach(tx, self.cfg, ob_id, now)
                        breached.append(ob.kind)
                # Raised into continuous release after an earlier release: the next follow-up
                # counts from the raise — or, when a lowering had waived it, from the last
                # release, as it did before (lowering and raising again moves no deadline).
                if change.direction == "raised" and self._needs_follow_up(tx, incident_id):
                    raised = {**dict(incident), "level": data.level}
                    since = now
                    if _follow_up_waived(latest):
                        since = self._last_release(tx, incident_id) or now
                    for ob in self._start_follow_up(tx, raised, since, now):
                        added.append(ob.kind)
                        if ob.status == "breached":
                            breached.append(ob.kind)
            tx.execute("UPDATE incidents SET level = ? WHERE id = ?", (data.level, incident_id))
            tx.execute(
                "INSERT INTO level_changes (incident_id, from_level, to_level, changed_at, reason,"
                " changed_by, recorded_at) VALUES (?,?,?,?,?,?,?)",
                (incident_id, old, data.level, to_db(now), data.reason, actor, to_db(now)),
            )
            audit.append(
                tx,
                now,
                actor,
                "incident.level_changed",
                incident_id,
                {
                    "from": old,
                    "to": data.level,
                    "reason": data.reason,
                    "added": added,
                    "waived": waived,
                    "breached": breached,
                },
            )
            return {
                "from": old,
                "to": data.level,
                "added": added,
                "waived": waived,
                "breached": breached,
            }

        result = await self._commit(change, once, incident_id)
        self._done(
            "level changed", incident_id, actor, once, level=f"{result['from']}->{data.level}"
        )
        return result

    async def close(
        self, incident_id: str, data: CloseIncident, actor: str, once: Once | None = None
    ) -> dict[str, Any]:
        """Close the incident: no more alerts.  What is overdue stays breached; the rest is waived."""
        now = self.clock.now()

        def change(tx: sqlite3.Connection) -> dict[str, Any]:
            self._active(tx, incident_id)
            cur = tx.execute(
                "SELECT id, kind, deadline FROM obligations WHERE incident_id = ? AND status = 'open'",
                (incident_id,),
            )
            open_obs = list(cur.fetchall())
            kinds = {ob["id"]: ob["kind"] for ob in open_obs}
            to_breach, to_waive = plan_close({ob["id"]: _t(ob, "deadline") for ob in open_obs}, now)
            for ob_id in to_breach:
                breach(tx, self.cfg, ob_id, now)
            for ob_id in to_waive:
                tx.execute(
                    "UPDATE obligations SET status = 'waived', waived_at = ?, waived_reason = ?"
                    " WHERE id = ?",
                    (to_db(now), f"事件已关闭:{data.reason}", ob_id),
                )
            breached = [kinds[i] for i in to_breach]
            waived = [kinds[i] for i in to_waive]
            tx.execute(
                "UPDATE steps SET status = 'cancelled', cancelled_at = ?"
                " WHERE incident_id = ? AND status = 'pending'",
                (to_db(now), incident_id),
            )
            tx.execute(
                "UPDATE notifications SET status = 'cancelled', last_error = 'incident closed'"
                " WHERE incident_id = ? AND status = 'queued' AND kind != 'watchdog'",
                (incident_id,),
            )
            tx.execute(
                "UPDATE incidents SET status = 'closed', closed_at = ?, close_reason = ? WHERE id = ?",
                (to_db(now), data.reason, incident_id),
            )
            audit.append(
                tx,
                now,
                actor,
                "incident.closed",
                incident_id,
                {"reason": data.reason, "waived": waived, "breached": breached},
            )
            audit_head.at_close(tx, self.cfg, incident_id, now)  # the head, kept elsewhere
            return {"waived": waived, "breached": breached}

        result = await self._commit(change, once, incident_id)
        self._done("incident closed", incident_id, actor, once)
        return result
