"""The scheduler: sleep until the earliest pending step (or a wake-up), then fire what is due.

The database is the truth: nothing is held in memory between rounds, so a restart simply
resumes, and what fell due while the service was down fires at once, collapsed per person and
obligation (see :mod:`responder.engine.fire`).

One round:

1. Clear the wake-up flag *before* looking at the database, so a declaration committed while
   this round runs wakes the next sleep at once instead of being missed.
2. Fire every due step, a batch of obligations per transaction.
3. Wake the dispatcher if anything was queued.
4. Sleep until the next pending step's due time, or until woken.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from responder.clock import Clock
from responder.config import Config
from responder.engine.fire import Fired, by_obligation, due_steps, fire_obligation
from responder.engine.metrics import Metrics
from responder.errors import Unavailable
from responder.store import Database
from responder.timeutil import from_db

log = logging.getLogger("responder.scheduler")

BATCH = 500  # steps read per round
# Obligations fired per transaction: enough to share a commit, few enough (a few ms) that a
# declaration or a milestone arriving meanwhile does not wait long for the writer.
OBLIGATIONS_PER_TX = 20
# While the database cannot be written (disk full, read-only, locked), try again this often
# (or at once when woken): what is due stays due and fires as soon as it can be recorded.
STORAGE_RETRY = timedelta(seconds=10)


class Scheduler:
    def __init__(
        self,
        db: Database,
        cfg: Config,
        clock: Clock,
        secret: bytes,
        metrics: Metrics,
        wake_dispatcher: Callable[[], None],
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock
        self.secret = secret
        self.metrics = metrics
        self.wake_dispatcher = wake_dispatcher
        self.wakeup = asyncio.Event()
        self.stopping = False

    def wake(self) -> None:
        self.wakeup.set()

    def stop(self) -> None:
        """Finish the round in progress (its transaction commits whole), then return."""
        self.stopping = True
        self.wakeup.set()

    async def next_due(self) -> datetime | None:
        row = await self.db.fetchone("SELECT MIN(due_at) FROM steps WHERE status = 'pending'")
        return from_db(row[0]) if row and row[0] else None

    async def fire_due(self) -> int:
        """Fire everything due now.  Returns the number of notifications queued."""
        queued_total = 0
        while True:
            now = self.clock.now()
            steps = await due_steps(self.db, now, BATCH)
            if not steps:
                return queued_total
            groups = by_obligation(steps)
            for i in range(0, len(groups), OBLIGATIONS_PER_TX):
                chunk = groups[i : i + OBLIGATIONS_PER_TX]

                def fire(
                    tx: sqlite3.Connection, chunk: list[list[Any]] = chunk, now: datetime = now
                ) -> list[Fired]:
                    return [fire_obligation(tx, self.cfg, self.secret, g, now) for g in chunk]

                for queued, lateness in await self.db.transact(fire):
                    queued_total += queued
                    for late in lateness:
                        self.metrics.observe("step_lateness_seconds", late)
                if queued_total:
                    self.wake_dispatcher()
            if len(steps) < BATCH:
                return queued_total

    async def run(self) -> None:
        while not self.stopping:
            self.wakeup.clear()
            try:
                await self.fire_due()
                nxt = await self.next_due()
            except asyncio.CancelledError:
                raise
            except Unavailable:  # the store logged why, once: no traceback every round
                nxt = self.clock.now() + STORAGE_RETRY
            except Exception:
                # A bug or a locked database must not stop the clock: log, wait, try again.
                log.exception("scheduler round failed; retrying")
                nxt = None
                await asyncio.sleep(1)
            await self.clock.sleep_until(nxt, self.wakeup)
