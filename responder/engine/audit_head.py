"""The audit log's head, recorded outside the database by the service itself.

The chain shows an entry changed or removed in the middle; keying shows an entry appended or
the chain re-hashed without the server secret.  Neither shows the newest entries cut off, nor
a rewrite that also removed the keying mark: only a head kept elsewhere does, given back as
``responder verify-audit --expect N:HASH``.  Nobody recorded heads, so the service does:

* at every incident close, inside the close's own transaction (:func:`at_close`, called by
  ``Ops.close``): the message is queued with the close or not at all;
* once a day at ``DAILY_AT`` in the configured zone (:class:`DailyHeads`, started with the
  engine), when the log has grown since the last daily record — a quiet day sends nothing.

"Recorded" is a message to each administrator (``alerts.admins``, through the outbox, like the
watchdog's) saying ``N:HASH``, and a log line with the same.  The hash is not a secret: it
cannot be turned into a keyed entry.  A log line written inside a transaction that then fails
to commit would name a head that never was; the messages cannot (they roll back with it).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime, time, timedelta

from responder.clock import Clock
from responder.config import Config
from responder.engine import outbox
from responder.engine.loop import Loop
from responder.store import Database, audit

log = logging.getLogger("responder.audit")
DAILY_AT = time(8, 0)  # the start of the working day: the message is read, not buried


def record(
    tx: sqlite3.Connection, cfg: Config, now: datetime, zh: str, en: str
) -> tuple[int, str] | None:
    """Tell the administrators and the log the audit log's head, inside the caller's
    transaction, after its own entry.  ``zh``/``en`` say why (a sentence each, or empty).

    The messages need the server secret (their acknowledgement links); a connection without
    it (a tool, a test) writes the log line only."""
    head = audit.head(tx)
    if head is None:
        return None
    mark = f"{head[0]}:{head[1]}"
    secret = audit.secret_of(tx)
    told = 0
    if secret is not None:
        told = outbox.tell_admins(
            tx,
            cfg,
            secret,
            incident_id=None,
            zh=f"{zh}审计日志当前头为 {mark},请保存本消息,以便日后用"
            f" responder verify-audit --expect {mark} 核对",
            en=f"{en}The audit log's head is {mark}. Keep this message: responder"
            f" verify-audit --expect {mark} checks the log against it",
            now=now,
        )
    log.info("audit log head %s (%s); %d administrators told", mark, en.strip() or "-", told)
    return head


def at_close(tx: sqlite3.Connection, cfg: Config, incident_id: str, now: datetime) -> None:
    """The head with the close's own entry in it (``Ops.close`` calls this last)."""
    record(tx, cfg, now, f"事件 {incident_id} 已关闭。", f"Incident {incident_id} closed. ")


def next_daily(now: datetime, cfg: Config) -> datetime:
    """The next ``DAILY_AT`` in the configured zone after ``now``."""
    local = now.astimezone(cfg.tz)
    due = datetime.combine(local.date(), DAILY_AT, tzinfo=cfg.tz)
    if due <= local:
        due = datetime.combine(local.date() + timedelta(days=1), DAILY_AT, tzinfo=cfg.tz)
    return due


class DailyHeads(Loop):
    """Records the head once a day (see the module docstring), on the injected clock."""

    name = "audit_heads"

    def __init__(
        self,
        db: Database,
        cfg: Config,
        clock: Clock,
        secret: bytes,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(db, cfg, clock, secret)
        self.on_queued = on_queued  # wakes the dispatcher for the messages queued
        self.last: tuple[int, str] | None = None  # the head this task last recorded
        self.due: datetime | None = None  # the next DAILY_AT (None until the first round)

    async def record_now(self) -> bool:
        """Record the head unless it is the one recorded last; whether messages were queued."""
        now = self.clock.now()
        last = self.last

        def daily(tx: sqlite3.Connection) -> tuple[int, str] | None:
            if audit.head(tx) in (None, last):
                return None
            return record(tx, self.cfg, now, "每日记录:", "Daily record. ")

        head = await self.db.transact(daily)
        if head is None:
            return False
        self.last = head
        return True

    async def round(self) -> datetime | None:
        now = self.clock.now()
        if self.due is not None and now >= self.due and await self.record_now():
            self.on_queued()
        self.due = next_daily(now, self.cfg)
        return self.due
