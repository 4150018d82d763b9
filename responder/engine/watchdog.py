"""The watchdog: the service watching its own lateness.

Lag is ``now`` minus the due time of the oldest step not yet fired (the scheduler) and of the
oldest notification not yet handed to a channel (the dispatcher).  Both are shown by
``/healthz`` and ``/metrics``.  When either exceeds ``alerts.max_lag``, the administrators are
told — at most once per ``REMIND`` while it lasts, so a stuck service does not spam them.
With replicas, once per ``REMIND`` for the whole cluster: the last alert is read from the audit
log inside the alert's own transaction (under the cluster's write lock), so of two replicas
seeing the same lag one tells the administrators.
(A message that failed on every channel is reported by the dispatcher as it happens.)

The running watchdog counts only work that was already due at its previous check: the
scheduler and the dispatcher have had a whole check interval for it.  So a restart after
downtime (everything overdue at once, fired within milliseconds) or a jump of the clock is not
mistaken for a stuck service, while a stuck one is still reported once it is ``max_lag`` late.

Each round also warns of API tokens that end within a week (:mod:`.token_ends`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from responder.clock import Clock
from responder.config import Config
from responder.engine import outbox
from responder.engine.loop import Loop
from responder.engine.token_ends import warn_token_ends
from responder.store import Database, audit
from responder.timeutil import format_duration, from_db, to_db

log = logging.getLogger("responder.watchdog")
CHECK_EVERY = timedelta(seconds=30)
REMIND = timedelta(minutes=30)


@dataclass(frozen=True)
class Lag:
    steps: float  # seconds the oldest due step has waited to fire
    outbox: float  # seconds the oldest due notification has waited to be sent

    @property
    def worst(self) -> float:
        return max(self.steps, self.outbox)


async def measure(db: Database, now: datetime, due_before: datetime | None = None) -> Lag:
    """Lag now, counting only work due at or before ``due_before`` (default: now)."""
    cutoff = to_db(due_before or now)
    row = await db.fetchone(
        "SELECT (SELECT MIN(due_at) FROM steps WHERE status = 'pending' AND due_at <= ?),"
        " (SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'queued'"
        "  AND next_attempt_at <= ?)",
        (cutoff, cutoff),
    )
    assert row is not None

    def lag(value: str | None) -> float:
        t = from_db(value)
        return max(0.0, (now - t).total_seconds()) if t else 0.0

    return Lag(lag(row[0]), lag(row[1]))


class Watchdog(Loop):
    name = "watchdog"

    def __init__(
        self,
        db: Database,
        cfg: Config,
        clock: Clock,
        secret: bytes,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(db, cfg, clock, secret)
        self.on_queued = on_queued  # wakes the dispatcher for what a check queued
        self.last_alert: datetime | None = None
        self.previous: datetime | None = None  # when the previous check looked

    async def check(self, due_before: datetime | None = None) -> Lag:
        """Measure the lag (of work due by ``due_before``, default now); tell the admins when
        it exceeds ``alerts.max_lag``, at most once per ``REMIND``."""
        now = self.clock.now()
        lag = await measure(self.db, now, due_before)
        bound = self.cfg.alerts.max_lag.total_seconds()
        if lag.worst <= bound:
            self.last_alert = None
            return lag
        if self.last_alert is not None and now - self.last_alert < REMIND:
            return lag
        self.last_alert = now
        late = timedelta(seconds=lag.worst)
        zh = f"提醒服务已滞后{format_duration(late, 'zh')}(提醒未按时发出),请立即检查服务"
        en = f"Alerts are running {format_duration(late, 'en')} late: check the service now"
        if await self.db.transact(lambda tx: self._tell(tx, lag, now, zh, en)):
            log.warning("alerts are %.0f s late; administrators told", lag.worst)
        return lag

    async def after_downtime(self) -> Lag:
        """With replicas, before this one starts firing: work overdue by more than
        ``alerts.max_lag`` means no replica was running (a live one fires and sends within
        seconds).  The first replica back tells the administrators, once for the cluster."""
        now = self.clock.now()
        lag = await measure(self.db, now)
        if lag.worst <= self.cfg.alerts.max_lag.total_seconds():
            return lag
        late = timedelta(seconds=lag.worst)
        zh = (
            f"服务所有副本曾停止运行,提醒最多逾期{format_duration(late, 'zh')},现已补发;"
            "请检查服务为何停止"
        )
        en = (
            f"Every replica of the service was down: alerts up to {format_duration(late, 'en')}"
            " overdue are being sent now; find out why the service stopped"
        )
        if await self.db.transact(lambda tx: self._tell(tx, lag, now, zh, en)):
            log.warning("the cluster was down: work %.0f s overdue; administrators told", lag.worst)
            self.on_queued()
        return lag

    def _tell(self, tx: sqlite3.Connection, lag: Lag, now: datetime, zh: str, en: str) -> bool:
        """Queue the alert to every administrator, and its audit entry.  With replicas, not
        if another one told them within ``REMIND`` (read under the cluster's write lock, so
        exactly one of two replicas seeing the same lag tells them)."""
        if self.shared:
            last = tx.execute(
                "SELECT at FROM audit_log WHERE action = 'lag.alerted' ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            told_at = from_db(last[0]) if last else None
            if told_at is not None and timedelta(0) <= now - told_at < REMIND:
                return False
        outbox.tell_admins(tx, self.cfg, self.secret, incident_id=None, zh=zh, en=en, now=now)
        audit.append(
            tx,
            now,
            "watchdog",
            "lag.alerted",
            "-",
            {"steps_s": lag.steps, "outbox_s": lag.outbox, "at": to_db(now)},
        )
        return True

    async def round(self) -> datetime | None:
        """Check the lag of what was due at the previous check (the first round only notes
        the time), and the tokens about to end; then sleep for ``CHECK_EVERY``."""
        now = self.clock.now()
        previous, self.previous = self.previous, now
        if previous is not None:
            before = self.last_alert
            await self.check(due_before=previous)
            told = await warn_token_ends(self.db, self.cfg, self.secret, now)
            if told or (self.last_alert is not None and self.last_alert != before):
                self.on_queued()
        return now + CHECK_EVERY
