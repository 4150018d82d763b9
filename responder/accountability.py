"""The accountability review: the measure the ladder proposes for a breach, and the write jobs
of the review — decide (accept, change, exempt), correct a decision, record the interview
(约谈) and the correction report (限期整改).

A decision is never changed: correcting one is a new decision naming it (``corrects``), and
both stay on the record.  Each decision seals the evidence it was taken on into its audit
entry (:mod:`responder.reports.seal`), so the evidence cannot be edited afterwards unseen.
Jobs are plain functions of a ``sqlite3.Connection``; :mod:`responder.ops` runs them.
"""

from __future__ import annotations

import calendar
import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from responder import obligations
from responder.config import MEASURES, Config
from responder.errors import BadInput, Conflict, NotFound
from responder.incidents import not_future
from responder.models import AwareTime, Reason, RowId, Text, Title, _In
from responder.reports import evidence
from responder.reports.seal import digest_of, seal
from responder.store import audit
from responder.timeutil import format_duration, from_db, local, show, to_db

# -- what a reviewer sends ----------------------------------------------------------------------


def _action_rules(schema: dict[str, Any]) -> None:
    """The rules between fields, in the document too: a change names its measure and gives a
    reason, an exemption gives a reason, only a change names a measure."""
    schema["allOf"] = [
        {
            "if": {"properties": {"action": {"const": "change"}}},
            "then": {
                "required": ["measure", "reason"],
                "properties": {"measure": {"type": "string"}, "reason": {"minLength": 1}},
            },
            "else": {"properties": {"measure": {"type": "null"}}},
        },
        {
            "if": {"properties": {"action": {"const": "exempt"}}},
            "then": {"required": ["reason"], "properties": {"reason": {"minLength": 1}}},
        },
    ]


class Decide(_In):
    """A reviewer's decision on a record: accept the proposed measure, change it, or exempt
    the unit.  ``corrects`` names the decision this one corrects (a decided record is never
    changed: it is corrected by a new decision)."""

    model_config = ConfigDict(json_schema_extra=_action_rules)

    action: Literal["accept", "change", "exempt"]
    measure: Literal["criticism", "interview", "correction"] | None = Field(
        None, description="for `change`: the measure decided instead of the proposed one"
    )
    reason: Text = Field("", description="required to change or exempt")
    correction_required: Text = Field(
        "", description="what the unit must correct (for 限期整改, `correction`)"
    )
    correction_due_at: AwareTime | None = Field(
        None, description="the correction's deadline; default: as the ladder says"
    )
    corrects: RowId | None = Field(
        None, description="the decision this one corrects (a decided record is never changed)"
    )

    @model_validator(mode="after")
    def _complete(self) -> Decide:
        if self.action in ("change", "exempt") and not self.reason:
            raise ValueError(
                "更改或免责须说明理由(reason) / a change or an exemption needs a reason"
            )
        if self.action == "change" and self.measure is None:
            raise ValueError("更改须给出措施(measure) / a change names the measure decided")
        if self.action != "change" and self.measure is not None:
            raise ValueError("只有更改(change)才给出措施 / only a change names a measure")
        return self


class RecordInterview(_In):
    """The admonishment interview (约谈) as it was held."""

    interviewee: Title = Field(description="the person interviewed, and their post")
    reason: Reason
    held_at: AwareTime
    place: Title
    conducted_by: Title
    correction_required: Reason
    correction_due_at: AwareTime


class CorrectionReport(_In):
    """The correction report the unit sent (整改报告)."""

    received_at: AwareTime
    text: Reason


# -- reading what a decision needs ----------------------------------------------------------------


def _record(tx: sqlite3.Connection, record_id: int) -> Any:
    row = tx.execute("SELECT * FROM accountability_records WHERE id = ?", (record_id,)).fetchone()
    if row is None:
        raise NotFound(
            "record_not_found",
            f"找不到问责记录 {record_id}",
            f"no accountability record {record_id}",
        )
    return row


CURRENT_DECISION = (
    "SELECT * FROM accountability_decisions WHERE record_id = ? ORDER BY id DESC LIMIT 1"
)
# Earlier breaches of the same unit that count for the ladder: on other incidents, not met in
# time (recorded late only), not exempted by their current decision.
PRIOR_BREACHES = (
    "SELECT r.id, r.incident_id, r.breached_at FROM accountability_records r"
    " JOIN obligations o ON o.id = r.obligation_id"
    " WHERE r.unit = ? AND r.incident_id != ? AND r.breached_at < ? AND r.breached_at >= ?"
    " AND NOT (o.met_at IS NOT NULL AND o.met_at <= o.deadline)"
    " AND COALESCE((SELECT d.measure FROM accountability_decisions d WHERE d.record_id = r.id"
    " ORDER BY d.id DESC LIMIT 1), '') != 'exempt' ORDER BY r.breached_at, r.id"
)


def months_before(t: datetime, months: int, cfg: Config) -> datetime:
    """The same local time ``months`` calendar months earlier (31 March − 1 → 28/29 Feb)."""
    lt = local(t, cfg.tz)
    index = lt.year * 12 + (lt.month - 1) - months
    year, month = divmod(index, 12)
    day = min(lt.day, calendar.monthrange(year, month + 1)[1])
    return lt.replace(year=year, month=month + 1, day=day)


def lookback_params(cfg: Config, record: Any) -> tuple[object, ...]:
    """The parameters of :data:`PRIOR_BREACHES` for a record: the longest window any rung
    looks back over (each rung then applies its own)."""
    breached = from_db(record["breached_at"])
    assert breached is not None
    longest = max((r.repeat_within_months or 0) for r in cfg.accountability.ladder)
    since = months_before(breached, longest, cfg) if longest else breached
    return (record["unit"], record["incident_id"], record["breached_at"], to_db(since))


# -- the ladder ------------------------------------------------------------------------------------


def overrun(record: Any, obligation: Any, now: datetime) -> timedelta:
    """By how much the deadline was overrun: to when it was met, or — still not met — to now."""
    deadline = from_db(obligation["deadline"])
    met = from_db(obligation["met_at"])
    assert deadline is not None
    return max(timedelta(0), (met or now) - deadline)


def met_in_time(obligation: Any) -> bool:
    """Met before its deadline, but recorded after the breach was recorded: likely no fault."""
    met, deadline = from_db(obligation["met_at"]), from_db(obligation["deadline"])
    return met is not None and deadline is not None and met <= deadline


def propose(
    cfg: Config, record: Any, obligation: Any, priors: Sequence[Any], now: datetime
) -> dict[str, Any]:
    """The ladder's proposal for a record, with its grounds in words (zh, en) and the earlier
    records it counted.  Pure."""
    late_by = overrun(record, obligation, now)
    base = {
        "overrun_s": int(late_by.total_seconds()),
        "prior_records": [],
        "correction_within_s": None,
    }
    if met_in_time(obligation):
        return {
            **base,
            "measure": "exempt",
            "grounds": ["按时完成,仅录入系统晚于时限:很可能无过错"],
            "grounds_en": ["done in time, only recorded after the deadline: likely no fault"],
        }
    breached = from_db(record["breached_at"])
    assert breached is not None
    for rung in cfg.accountability.ladder:
        zh: list[str] = []
        en: list[str] = []
        counted: list[int] = []
        if rung.repeat_within_months:
            since = months_before(breached, rung.repeat_within_months, cfg)
            counted = [p["id"] for p in priors if from_db(p["breached_at"]) >= since]  # type: ignore[operator]
            if counted:
                n = rung.repeat_within_months
                ids = ", ".join(f"#{i}" for i in counted)
                zh.append(f"该单位此前 {n} 个月内已有超时记录({ids})")
                en.append(f"the unit breached in the {n} months before ({ids})")
        if rung.overrun_over is not None and late_by > rung.overrun_over:
            zh.append(f"超时 {format_duration(late_by)},超过 {format_duration(rung.overrun_over)}")
            en.append(
                f"overran by {format_duration(late_by, 'en')}, more than"
                f" {format_duration(rung.overrun_over, 'en')}"
            )
        if zh or not rung.conditional:
            if not zh:
                zh, en = ["首次超时"], ["a first breach"]
            within = rung.correction_within
            return {
                **base,
                "measure": rung.measure,
                "grounds": zh,
                "grounds_en": en,
                "prior_records": counted,
                "correction_within_s": int(within.total_seconds()) if within else None,
            }
    raise AssertionError("the ladder's last rung has no condition")  # checked by the config


def measure_names(measure: str | None) -> dict[str, str | None]:
    zh, en = MEASURES.get(measure or "", (None, None))
    return {"measure_name": zh, "measure_name_en": en}


# -- decide --------------------------------------------------------------------------------------


def _check_corrects(record_id: int, current: Any, corrects: int | None) -> None:
    if current is None and corrects is not None:
        raise Conflict(
            "not_decided",
            f"问责记录 {record_id} 尚无决定,无可更正",
            f"record {record_id} has no decision to correct",
        )
    if current is not None and corrects is None:
        raise Conflict(
            "already_decided",
            f"问责记录 {record_id} 已有决定(决定 {current['id']}),不能修改;"
            f"如需更正,请提交新决定并注明 corrects = {current['id']}",
            f"record {record_id} is decided (decision {current['id']}) and cannot be changed;"
            f" to correct it, send a new decision with corrects = {current['id']}",
        )
    if current is not None and corrects != current["id"]:
        raise Conflict(
            "not_current_decision",
            f"只能更正现行决定(决定 {current['id']})",
            f"only the current decision (decision {current['id']}) can be corrected",
        )


def _due(
    cfg: Config, data: Decide, measure: str, proposal: dict[str, Any], now: datetime
) -> datetime | None:
    """When the correction a decision asks for is due (None: it asks for none now)."""
    if measure not in ("interview", "correction"):
        return None
    if data.correction_due_at is not None:
        if data.correction_due_at <= now:
            raise BadInput(
                "correction_due_in_past",
                f"整改期限须晚于现在({show(now, cfg.tz)})",
                f"the correction deadline must be after now ({show(now, cfg.tz)})",
            )
        return data.correction_due_at
    within = proposal["correction_within_s"]
    if measure != proposal["measure"] or within is None:
        return now + cfg.accountability.correction_within
    return now + timedelta(seconds=within)


def decide(
    tx: sqlite3.Connection, cfg: Config, record_id: int, data: Decide, actor: str, now: datetime
) -> dict[str, Any]:
    """Decide a record (or correct its current decision): check, seal the evidence, write the
    decision and its audit entry, and start or withdraw the correction's clock."""
    record = _record(tx, record_id)
    current = tx.execute(CURRENT_DECISION, (record_id,)).fetchone()
    _check_corrects(record_id, current, data.corrects)
    rows = evidence.read_in(tx, evidence.OBLIGATION_SQL, record["obligation_id"])
    (obligation,) = rows["obligations"]
    priors = tx.execute(PRIOR_BREACHES, lookback_params(cfg, record)).fetchall()
    proposal = propose(cfg, record, obligation, priors, now)
    measure = {"accept": proposal["measure"], "change": data.measure, "exempt": "exempt"}[
        data.action
    ]
    assert measure is not None
    if measure == "correction" and not data.correction_required:
        raise BadInput(
            "correction_required_missing",
            "限期整改须写明整改要求(correction_required)",
            "a correction within a deadline needs what is to be corrected (correction_required)",
        )
    due = _due(cfg, data, measure, proposal, now)
    earlier = tx.execute(
        "SELECT * FROM accountability_decisions WHERE record_id = ? ORDER BY id", (record_id,)
    ).fetchall()
    sealed = seal({**rows, "accountability_records": [record], "accountability_decisions": earlier})
    reason = data.reason or ("; ".join(proposal["grounds"]) if measure == "exempt" else "")
    seq = audit.append(
        tx,
        now,
        actor,
        "accountability.decided" if current is None else "accountability.corrected",
        record["incident_id"],
        {
            "record": record_id,
            "action": data.action,
            "measure": measure,
            "proposed": proposal["measure"],
            "grounds": proposal["grounds"],
            "reason": reason,
            "correction_due_at": to_db(due),
            "corrects": data.corrects,
            "sealed": sealed,
        },
    )
    cur = tx.execute(
        "INSERT INTO accountability_decisions (record_id, action, measure, proposed_measure,"
        " proposal, reason, correction_required, correction_due_at, corrects, evidence_digest,"
        " audit_seq, decided_by, decided_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            record_id,
            data.action,
            measure,
            proposal["measure"],
            json.dumps(proposal, ensure_ascii=False),
            reason,
            data.correction_required,
            to_db(due),
            data.corrects,
            digest_of(sealed),
            seq,
            actor,
            to_db(now),
        ),
    )
    decision_id = cur.lastrowid
    assert decision_id is not None
    obligations.record_decided(tx, record_id, proposal["measure"], measure, reason, actor, now)
    if current is not None:
        _withdraw_corrections(tx, record_id, decision_id, now)
    if measure == "correction" and due is not None:
        _open_correction(tx, cfg, record, decision_id, data.correction_required, due, now)
    return {"id": decision_id, "record_id": record_id, "measure": measure, "audit_seq": seq}


def _open_correction(
    tx: sqlite3.Connection,
    cfg: Config,
    record: Any,
    decision_id: int,
    required: str,
    due: datetime,
    now: datetime,
) -> int:
    obligation_id = obligations.start_correction(tx, cfg, record, due, now)
    cur = tx.execute(
        "INSERT INTO accountability_corrections (record_id, decision_id, unit, required, due_at,"
        " obligation_id, created_at) VALUES (?,?,?,?,?,?,?)",
        (
            record["id"],
            decision_id,
            record["unit"],
            required,
            to_db(due),
            obligation_id,
            to_db(now),
        ),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def _withdraw_corrections(
    tx: sqlite3.Connection, record_id: int, by_decision: int, now: datetime
) -> None:
    """A corrected decision's open correction is withdrawn (its reminders stop); the new
    decision asks for its own, if any."""
    for c in tx.execute(
        "SELECT id, obligation_id FROM accountability_corrections"
        " WHERE record_id = ? AND status = 'open'",
        (record_id,),
    ).fetchall():
        tx.execute(
            "UPDATE accountability_corrections SET status = 'withdrawn', withdrawn_at = ?"
            " WHERE id = ?",
            (to_db(now), c["id"]),
        )
        obligations.withdraw_correction(
            tx, c["obligation_id"], f"决定已由决定 {by_decision} 更正", now
        )


# -- the interview and the correction report -------------------------------------------------


def record_interview(
    tx: sqlite3.Connection,
    cfg: Config,
    record_id: int,
    data: RecordInterview,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Record the interview the current decision asked for; the correction it required
    starts its clock (reminders to the unit's head)."""
    record = _record(tx, record_id)
    current = tx.execute(CURRENT_DECISION, (record_id,)).fetchone()
    if current is None or current["measure"] != "interview":
        raise Conflict(
            "no_interview_decided",
            f"问责记录 {record_id} 的现行决定不是约谈",
            f"the current decision on record {record_id} is not an interview",
        )
    done = tx.execute(
        "SELECT id FROM accountability_interviews WHERE decision_id = ?", (current["id"],)
    ).fetchone()
    if done is not None:
        raise Conflict(
            "interview_recorded",
            f"约谈已记录(约谈记录 {done['id']}),不能修改",
            f"the interview is already recorded (interview {done['id']}) and cannot be changed",
        )
    not_future(data.held_at, "held_at", now, cfg.tz)
    if data.correction_due_at <= data.held_at:
        raise BadInput(
            "correction_due_before_interview",
            "整改期限须晚于约谈时间",
            "the correction deadline must be after the interview",
        )
    cur = tx.execute(
        "INSERT INTO accountability_interviews (record_id, decision_id, unit, interviewee,"
        " reason, held_at, place, conducted_by, correction_required, correction_due_at,"
        " recorded_by, recorded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            record_id,
            current["id"],
            record["unit"],
            data.interviewee,
            data.reason,
            to_db(data.held_at),
            data.place,
            data.conducted_by,
            data.correction_required,
            to_db(data.correction_due_at),
            actor,
            to_db(now),
        ),
    )
    interview_id = cur.lastrowid
    assert interview_id is not None
    correction_id = _open_correction(
        tx, cfg, record, current["id"], data.correction_required, data.correction_due_at, now
    )
    audit.append(
        tx,
        now,
        actor,
        "accountability.interviewed",
        record["incident_id"],
        {
            "record": record_id,
            "interview": interview_id,
            "correction": correction_id,
            **data.model_dump(mode="json"),
        },
    )
    return {"id": interview_id, "record_id": record_id, "correction_id": correction_id}


def record_correction_report(
    tx: sqlite3.Connection,
    cfg: Config,
    record_id: int,
    data: CorrectionReport,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """The unit's correction report came in: the correction's clock stops (met, or late)."""
    record = _record(tx, record_id)
    c = tx.execute(
        "SELECT * FROM accountability_corrections WHERE record_id = ? AND status = 'open'",
        (record_id,),
    ).fetchone()
    if c is None:
        raise Conflict(
            "no_open_correction",
            f"问责记录 {record_id} 没有待提交报告的整改",
            f"record {record_id} has no correction waiting for its report",
        )
    not_future(data.received_at, "received_at", now, cfg.tz)
    asked = from_db(c["created_at"])
    assert asked is not None
    if data.received_at < asked:
        raise BadInput(
            "report_before_correction",
            f"收到整改报告的时间不能早于提出整改要求的时间({show(asked, cfg.tz)})",
            f"the report cannot be received before the correction was asked for"
            f" ({show(asked, cfg.tz)})",
        )
    tx.execute(
        "UPDATE accountability_corrections SET status = 'received', report_received_at = ?,"
        " report_text = ?, report_recorded_by = ?, report_recorded_at = ? WHERE id = ?",
        (to_db(data.received_at), data.text, actor, to_db(now), c["id"]),
    )
    in_time = obligations.settle_correction(tx, cfg, c["obligation_id"], data.received_at, now)
    audit.append(
        tx,
        now,
        actor,
        "accountability.correction_reported",
        record["incident_id"],
        {
            "record": record_id,
            "correction": c["id"],
            "in_time": in_time,
            **data.model_dump(mode="json"),
        },
    )
    return {"id": c["id"], "record_id": record_id, "in_time": in_time}


# -- a report made ---------------------------------------------------------------------------


def seal_report(
    tx: sqlite3.Connection,
    subject: str,
    sealed: dict[str, Any],
    facts: dict[str, Any],
    actor: str,
    now: datetime,
) -> tuple[int, str]:
    """The audit entry of a report: who made it, what it covered, and the seal of every row it
    shows.  Returns (sequence number, hash): the head ``verify-audit --expect`` checks.

    The same report made again — the same subject and facts, every row it shows unchanged
    since the last report of that subject — is the same document: that report's entry is
    returned and nothing is appended.  Reloading a page, a printer's preview, a second
    reviewer opening it do not grow the log; a report after any change to what it shows is
    sealed anew.  (In this write transaction: two reports made at once append one entry.)"""
    last = tx.execute(
        "SELECT seq, hash, data FROM audit_log WHERE action = 'report.made' AND subject = ?"
        " ORDER BY seq DESC LIMIT 1",
        (subject,),
    ).fetchone()
    if last is not None:
        earlier = json.loads(last[2])
        if earlier.pop("sealed", None) == sealed and earlier == facts:
            return int(last[0]), str(last[1])
    seq = audit.append(tx, now, actor, "report.made", subject, {**facts, "sealed": sealed})
    (digest,) = tx.execute("SELECT hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    return seq, digest
