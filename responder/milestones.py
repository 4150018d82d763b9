"""Write jobs for the milestones that meet obligations: releases and press conferences.

A milestone is recorded at the time it actually happened; it meets the oldest duty of its
kind still to be done (:func:`responder.obligations.meet`), which cancels that duty's pending
alerts in the same transaction.  Each job checks first and changes nothing when it refuses.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from responder import obligations
from responder.config import Config
from responder.errors import BadInput, Conflict, NotFound
from responder.incidents import active, not_future, occurred_at
from responder.models import (
    PressConferenceHeld,
    RecordRelease,
    ReschedulePressConference,
    SchedulePressConference,
)
from responder.store import audit
from responder.timeutil import show, to_db


def _when_it_happened(cfg: Config, t: datetime, field: str, incident: Any, now: datetime) -> None:
    """A milestone happened between the incident and now."""
    not_future(t, field, now, cfg.tz)
    occurred = occurred_at(incident)
    if t < occurred:
        raise BadInput(
            "before_occurrence",
            f"{field} 不能早于事件发生时间({show(occurred, cfg.tz)})",
            f"{field} cannot be before the incident occurred ({show(occurred, cfg.tz)})",
        )


# -- releases -------------------------------------------------------------------------------------


def _release_fits(
    tx: sqlite3.Connection, cfg: Config, incident_id: str, kind: str, data: RecordRelease
) -> None:
    """The release is of the kind the incident waits for, and not recorded already."""
    if kind == "authoritative":
        released = tx.execute(
            "SELECT 1 FROM releases WHERE incident_id = ? AND kind = 'authoritative'",
            (incident_id,),
        ).fetchone()
        # A second one only when a raise has since opened a new, unmet obligation.
        if released and obligations.open_deadline(tx, incident_id, "authoritative_release") is None:
            raise Conflict(
                "already_released",
                "该事件已记录权威信息发布;后续发布请记录为“持续发布”",
                "the authoritative release is already recorded; record a follow-up",
            )
    elif obligations.open_deadline(tx, incident_id, "authoritative_release"):
        # The first release of a serious incident is the authoritative one: recorded as a
        # follow-up by mistake it would leave the 5 h duty open and alerting.
        raise Conflict(
            "release_not_recorded",
            "尚未记录权威信息发布;第一次发布请记录为“发布权威信息”",
            "the authoritative release is not recorded yet; record the first release as that",
        )
    else:
        # Each release starts the next follow-up's clock: dated before the last one, it would
        # meet a duty whose clock started after it, and count the next one back from the past.
        last = obligations.last_release(tx, incident_id)
        if last is not None and data.published_at < last:
            raise Conflict(
                "release_out_of_order",
                f"持续发布的时间须晚于上一次发布({show(last, cfg.tz)});请按发布先后记录",
                f"a follow-up must be later than the last release ({show(last, cfg.tz)});"
                " record releases in the order they went out",
            )
    same_time = tx.execute(
        "SELECT id FROM releases WHERE incident_id = ? AND published_at = ?",
        (incident_id, to_db(data.published_at)),
    ).fetchone()
    if same_time is not None:
        # A client retrying a request whose answer it lost: recorded twice, a follow-up would
        # meet the next follow-up duty at once, with no new information out.
        when = show(data.published_at, cfg.tz)
        raise Conflict(
            "release_already_recorded",
            f"该事件 {when} 的发布已记录(发布记录 {same_time[0]}),未重复记录",
            f"a release published at {when} is already recorded (release {same_time[0]});"
            " not recorded again",
        )


def record_release(
    tx: sqlite3.Connection,
    cfg: Config,
    incident_id: str,
    data: RecordRelease,
    given: dict[str, Any],
    actor: str,
    kind: str,
    now: datetime,
) -> dict[str, Any]:
    """Record an authoritative or follow-up release, dated when it actually went out; it
    meets the duty and starts the next follow-up's clock."""
    incident = active(tx, incident_id)
    _when_it_happened(cfg, data.published_at, "published_at", incident, now)
    deadline = obligations.open_deadline(tx, incident_id, f"{kind}_release")
    _release_fits(tx, cfg, incident_id, kind, data)
    recorded_late = deadline is not None and data.published_at <= deadline < now
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
    met = obligations.meet(tx, cfg, incident_id, f"{kind}_release", data.published_at, now)
    obligations.start_follow_up(tx, cfg, incident, data.published_at, now)
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
        "checklist_missing": data.checklist.missing(),
        "recorded_late": recorded_late,
    }


# -- press conferences ------------------------------------------------------------------------------


def _conference_time(t: datetime, incident: Any, now: datetime) -> None:
    """A press conference is scheduled after the incident, and not in the past."""
    if t < occurred_at(incident):
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


def _press_conference(tx: sqlite3.Connection, incident_id: str, pc_id: int) -> Any:
    pc = tx.execute(
        "SELECT * FROM press_conferences WHERE id = ? AND incident_id = ?", (pc_id, incident_id)
    ).fetchone()
    if pc is None:
        raise NotFound(
            "press_conference_not_found",
            f"事件 {incident_id} 没有编号为 {pc_id} 的新闻发布会",
            f"incident {incident_id} has no press conference {pc_id}",
        )
    return pc


def _after_deadline(tx: sqlite3.Connection, incident_id: str, scheduled_at: datetime) -> bool:
    deadline = obligations.open_deadline(tx, incident_id, "press_conference")
    return deadline is not None and scheduled_at > deadline


def schedule_press_conference(
    tx: sqlite3.Connection,
    incident_id: str,
    data: SchedulePressConference,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    incident = active(tx, incident_id)
    _conference_time(data.scheduled_at, incident, now)
    scheduled = tx.execute(
        "SELECT id FROM press_conferences WHERE incident_id = ? AND status = 'scheduled'",
        (incident_id,),
    ).fetchone()
    if scheduled:
        raise Conflict(
            "already_scheduled",
            "已有一场待举行的新闻发布会;请改期或记录其已举行",
            "a press conference is already scheduled: reschedule it or record it held",
        )
    cur = tx.execute(
        "INSERT INTO press_conferences (incident_id, status, scheduled_at, venue,"
        " spokesperson, recorded_at, recorded_by) VALUES (?, 'scheduled', ?, ?, ?, ?, ?)",
        (incident_id, to_db(data.scheduled_at), data.venue, data.spokesperson, to_db(now), actor),
    )
    pc_id = cur.lastrowid
    audit.append(
        tx,
        now,
        actor,
        "press_conference.scheduled",
        incident_id,
        {"press_conference_id": pc_id, **data.model_dump(mode="json")},
    )
    return {"id": pc_id, "after_deadline": _after_deadline(tx, incident_id, data.scheduled_at)}


def reschedule_press_conference(
    tx: sqlite3.Connection,
    incident_id: str,
    pc_id: int,
    data: ReschedulePressConference,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    incident = active(tx, incident_id)
    pc = _press_conference(tx, incident_id, pc_id)
    _conference_time(data.scheduled_at, incident, now)
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
    audit.append(
        tx,
        now,
        actor,
        "press_conference.rescheduled",
        incident_id,
        {"press_conference_id": pc_id, "from": pc["scheduled_at"], **data.model_dump(mode="json")},
    )
    return {"id": pc_id, "after_deadline": _after_deadline(tx, incident_id, data.scheduled_at)}


def _held_once(tx: sqlite3.Connection, cfg: Config, incident_id: str, held_at: datetime) -> None:
    """A client retrying a request whose answer it lost: recorded twice, the second would meet
    the next press-conference duty (after a raise) with none held."""
    same_time = tx.execute(
        "SELECT id FROM press_conferences WHERE incident_id = ? AND status = 'held'"
        " AND held_at = ?",
        (incident_id, to_db(held_at)),
    ).fetchone()
    if same_time is not None:
        when = show(held_at, cfg.tz)
        raise Conflict(
            "already_held",
            f"{when} 举行的新闻发布会已记录(发布会 {same_time[0]}),未重复记录",
            f"a press conference held at {when} is already recorded (press conference"
            f" {same_time[0]}); not recorded again",
        )


def press_conference_held(
    tx: sqlite3.Connection,
    cfg: Config,
    incident_id: str,
    data: PressConferenceHeld,
    given: dict[str, Any],
    actor: str,
    pc_id: int | None,
    now: datetime,
) -> dict[str, Any]:
    """Record that a press conference was held (the scheduled one ``pc_id``, or one not
    scheduled here before)."""
    incident = active(tx, incident_id)
    _when_it_happened(cfg, data.held_at, "held_at", incident, now)
    deadline = obligations.open_deadline(tx, incident_id, "press_conference")
    recorded_late = deadline is not None and data.held_at <= deadline < now
    _held_once(tx, cfg, incident_id, data.held_at)
    if pc_id is not None:
        if _press_conference(tx, incident_id, pc_id)["status"] == "held":
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
                pc_id,
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
        pc_id = cur.lastrowid
    met = obligations.meet(tx, cfg, incident_id, "press_conference", data.held_at, now)
    audit.append(
        tx,
        now,
        actor,
        "press_conference.held",
        incident_id,
        {"press_conference_id": pc_id, **data.model_dump(mode="json"), **given, "met": met},
    )
    return {"id": pc_id, "met": met, "recorded_late": recorded_late}
