"""Operations: the thin async shell that the API, the pages and the CLI all call.

The work itself is in plain write jobs (:mod:`responder.incidents`,
:mod:`responder.milestones`, which change obligations through :mod:`responder.obligations`).
This shell adds what every operation needs around its job:

1. ``now`` from the injected clock, and a time a little ahead of it (a client whose clock
   runs fast) taken as now, with what was given kept for the audit entry;
2. the job in one write transaction, with its idempotency key checked and stored in that
   same transaction when the request carried one;
3. one log line, and a wake-up for the scheduler so new or cancelled timers take effect at
   once instead of at its next poll.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from responder import accountability, incidents, milestones
from responder.accountability import CorrectionReport, Decide, RecordInterview
from responder.clock import Clock
from responder.config import Config
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
from responder.store import Database
from responder.timeutil import at_most_now

log = logging.getLogger("responder.ops")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def clock_ahead(data: M, fields: tuple[str, ...], now: datetime) -> tuple[M, dict[str, Any]]:
    """``data`` with each of ``fields`` a little ahead of our clock taken as now
    (:data:`~responder.timeutil.CLOCK_SKEW`), and, for the audit entry, what was given."""
    given = {f: t for f in fields if (t := getattr(data, f)) is not None and t > now}
    if not given:
        return data, {}
    taken = data.model_copy(update={f: at_most_now(t, now) for f, t in given.items()})
    return taken, {"given_ahead_of_the_clock": {f: t.isoformat() for f, t in given.items()}}


class Ops:
    def __init__(
        self, db: Database, cfg: Config, clock: Clock, wake: Callable[[], None] | None = None
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock
        self._wake = wake or (lambda: None)

    def wake_with(self, wake: Callable[[], None]) -> None:
        """Whom to wake after a change (the scheduler, once the engine exists)."""
        self._wake = wake

    async def _commit(
        self, job: Callable[[sqlite3.Connection], T], once: Once | None, incident_id: str
    ) -> T:
        """Run a job in one write transaction.  With ``once`` (a request that carried an
        Idempotency-Key, see :mod:`responder.idempotency`) the key is checked and stored in that
        same transaction: a repeated request changes nothing and gets the first answer.
        ``job`` returns the answer, which must be JSON; for a declaration, the new
        incident's id (``incident_id`` is then empty)."""
        if once is None:
            return await self.db.transact(job)
        now = self.clock.now()

        def keyed(tx: sqlite3.Connection) -> T:
            stored = replay(tx, once)
            if stored is not None:
                return stored  # type: ignore[no-any-return]
            result = job(tx)
            remember(tx, once, incident_id or str(result), result, now)
            return result

        return await self.db.transact(keyed)

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

    # -- incidents ----------------------------------------------------------------------

    async def declare(self, data: DeclareIncident, actor: str, once: Once | None = None) -> str:
        """Register an incident and set its clocks running.  Returns the incident id."""
        now = self.clock.now()
        data, given = clock_ahead(data, ("occurred_at", "learned_at"), now)
        job = incidents.declaration(self.cfg, data, given, actor, now)
        incident_id = await self._commit(job, once, "")
        self._done(
            "incident declared", incident_id, actor, once, level=data.level, drill=data.drill
        )
        return incident_id

    async def change_level(
        self, incident_id: str, data: ChangeLevel, actor: str, once: Once | None = None
    ) -> dict[str, Any]:
        now = self.clock.now()
        result = await self._commit(
            lambda tx: incidents.change_level(tx, self.cfg, incident_id, data, actor, now),
            once,
            incident_id,
        )
        level = f"{result['from']}->{data.level}"
        self._done("level changed", incident_id, actor, once, level=level)
        return result

    async def close(
        self, incident_id: str, data: CloseIncident, actor: str, once: Once | None = None
    ) -> dict[str, Any]:
        now = self.clock.now()
        result = await self._commit(
            lambda tx: incidents.close(tx, self.cfg, incident_id, data, actor, now),
            once,
            incident_id,
        )
        self._done("incident closed", incident_id, actor, once)
        return result

    # -- milestones ---------------------------------------------------------------------

    async def record_release(
        self,
        incident_id: str,
        data: RecordRelease,
        actor: str,
        kind: str = "authoritative",
        once: Once | None = None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        data, given = clock_ahead(data, ("published_at",), now)
        result = await self._commit(
            lambda tx: milestones.record_release(
                tx, self.cfg, incident_id, data, given, actor, kind, now
            ),
            once,
            incident_id,
        )
        self._done(f"{kind} release recorded", incident_id, actor, once, met=len(result["met"]))
        return result

    async def schedule_press_conference(
        self,
        incident_id: str,
        data: SchedulePressConference,
        actor: str,
        once: Once | None = None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        return await self._commit(
            lambda tx: milestones.schedule_press_conference(tx, incident_id, data, actor, now),
            once,
            incident_id,
        )

    async def reschedule_press_conference(
        self,
        incident_id: str,
        pc_id: int,
        data: ReschedulePressConference,
        actor: str,
        once: Once | None = None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        return await self._commit(
            lambda tx: milestones.reschedule_press_conference(
                tx, incident_id, pc_id, data, actor, now
            ),
            once,
            incident_id,
        )

    async def press_conference_held(
        self,
        incident_id: str,
        data: PressConferenceHeld,
        actor: str,
        pc_id: int | None = None,
        once: Once | None = None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        data, given = clock_ahead(data, ("held_at",), now)
        result = await self._commit(
            lambda tx: milestones.press_conference_held(
                tx, self.cfg, incident_id, data, given, actor, pc_id, now
            ),
            once,
            incident_id,
        )
        self._done("press conference held", incident_id, actor, once, met=len(result["met"]))
        return result

    # -- the accountability review ---------------------------------------------------------
    # No Idempotency-Key here: a decision sent twice is refused (409, already decided), and
    # the keys table belongs to incidents.

    async def decide(self, record_id: int, data: Decide, actor: str) -> dict[str, Any]:
        """Decide a record, or correct its current decision (``data.corrects``)."""
        now = self.clock.now()
        result = await self.db.transact(
            lambda tx: accountability.decide(tx, self.cfg, record_id, data, actor, now)
        )
        self._done("record decided", f"record {record_id}", actor, None, measure=result["measure"])
        return result

    async def record_interview(
        self, record_id: int, data: RecordInterview, actor: str
    ) -> dict[str, Any]:
        now = self.clock.now()
        data, _ = clock_ahead(data, ("held_at",), now)
        result = await self.db.transact(
            lambda tx: accountability.record_interview(tx, self.cfg, record_id, data, actor, now)
        )
        self._done("interview recorded", f"record {record_id}", actor, None)
        return result

    async def record_correction_report(
        self, record_id: int, data: CorrectionReport, actor: str
    ) -> dict[str, Any]:
        now = self.clock.now()
        data, _ = clock_ahead(data, ("received_at",), now)
        result = await self.db.transact(
            lambda tx: accountability.record_correction_report(
                tx, self.cfg, record_id, data, actor, now
            )
        )
        self._done("correction report recorded", f"record {record_id}", actor, None)
        return result

    async def seal_report(
        self, subject: str, sealed: dict[str, Any], facts: dict[str, Any], actor: str
    ) -> tuple[int, str]:
        """Record that a report was made, sealing the rows it shows; returns its audit entry
        (sequence number and hash): the head the report prints."""
        now = self.clock.now()
        return await self.db.transact(
            lambda tx: accountability.seal_report(tx, subject, sealed, facts, actor, now)
        )
