"""The scheduler: sleep until the earliest pending step (or a wake-up), then fire what is due.

The database is the truth: nothing is held in memory between rounds, so a restart simply
resumes, and what fell due while the service was down fires at once, collapsed per person and
obligation (see :mod:`responder.engine.fire`).

One round (the loop around it is :mod:`.loop`'s):

1. Fire every due step, a batch of obligations per transaction — an incident's obligations
   always in the same one, so that what they tell one person at once is one message.
2. Wake the dispatcher if anything was queued.
3. Sleep until the next pending step's due time, or until woken by a change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime

from responder.clock import Clock
from responder.config import Config
from responder.engine.fire import Fired, by_obligation, due_steps, fire_batch
from responder.engine.loop import Loop
from responder.engine.metrics import Metrics
from responder.rows import Step
from responder.store import Database
from responder.timeutil import from_db

BATCH = 500  # steps read per round
# Obligations fired per transaction: enough to share a commit, few enough (a few ms) that a
# declaration or a milestone arriving meanwhile does not wait long for the writer.
OBLIGATIONS_PER_TX = 20


def transactions(groups: list[list[Step]]) -> list[list[list[Step]]]:
    """The obligations' groups of due steps cut into transactions of about
    ``OBLIGATIONS_PER_TX`` obligations, never cutting an incident in two."""
    incidents: dict[str, list[list[Step]]] = {}
    for group in groups:
        incidents.setdefault(group[0].incident_id, []).append(group)
    out: list[list[list[Step]]] = [[]]
    for obligations in incidents.values():
        if out[-1] and len(out[-1]) + len(obligations) > OBLIGATIONS_PER_TX:
            out.append([])
        out[-1].extend(obligations)
    return [chunk for chunk in out if chunk]


class Scheduler(Loop):
    name = "scheduler"
    follows_cluster = True  # another replica adds steps

    def __init__(
        self,
        db: Database,
        cfg: Config,
        clock: Clock,
        secret: bytes,
        metrics: Metrics,
        wake_dispatcher: Callable[[], None],
    ) -> None:
        super().__init__(db, cfg, clock, secret)
        self.metrics = metrics
        self.wake_dispatcher = wake_dispatcher

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
            for chunk in transactions(by_obligation(steps)):

                def fire(
                    tx: sqlite3.Connection, chunk: list[list[Step]] = chunk, now: datetime = now
                ) -> Fired:
                    return fire_batch(tx, self.cfg, self.secret, chunk, now)

                queued, lateness = await self.db.transact(fire)
                queued_total += queued
                for late in lateness:
                    self.metrics.observe("step_lateness_seconds", late)
                if queued_total:
                    self.wake_dispatcher()
            if len(steps) < BATCH:
                return queued_total

    async def round(self) -> datetime | None:
        await self.fire_due()
        return await self.next_due()
