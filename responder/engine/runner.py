"""The engine as one object: start the scheduler, dispatcher, watchdog and the daily audit
head record; stop them cleanly.

The service layer (:class:`responder.ops.Ops`) is built beside it by the application and
calls :meth:`Engine.changed` after each change, so a declaration or a milestone takes effect at
once instead of at the next poll.  The database is given the server secret here: every audit
entry the service writes is keyed.
"""

from __future__ import annotations

import asyncio
import logging

from responder.clock import Clock
from responder.config import Config
from responder.engine.audit_head import DailyHeads
from responder.engine.dispatcher import Dispatcher
from responder.engine.foreground import Foreground
from responder.engine.metrics import Metrics
from responder.engine.scheduler import Scheduler
from responder.engine.watchdog import Lag, Watchdog, measure
from responder.store import Database

log = logging.getLogger("responder.engine")
# Longer than the dispatcher's own grace for sends in flight (Dispatcher.drain).
STOP_GRACE = 40.0


class Engine:
    def __init__(self, db: Database, cfg: Config, clock: Clock, secret: bytes) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock
        self.metrics = Metrics()
        self.foreground = Foreground()  # the web app counts the requests it is answering
        self.dispatcher = Dispatcher(db, cfg, clock, secret, self.metrics, self.foreground)
        self.scheduler = Scheduler(db, cfg, clock, secret, self.metrics, self.dispatcher.wake)
        self.watchdog = Watchdog(db, cfg, clock, secret, on_queued=self.dispatcher.wake)
        self.heads = DailyHeads(db, cfg, clock, secret, on_queued=self.dispatcher.wake)
        self._tasks: list[asyncio.Task[None]] = []
        db.use_secret(secret)  # audit entries keyed from here on (see store.audit)

    def changed(self) -> None:
        """A change committed: its timers to the scheduler, and what it queued itself (a close:
        the audit log's head to the administrators) to the dispatcher, which would otherwise
        sleep until a step fires — and the watchdog would take the wait for lag.  Mostly the
        dispatcher finds nothing to claim: one quick round, merged with any wake pending."""
        self.scheduler.wake()
        self.dispatcher.wake()

    async def start(self) -> None:
        if self.watchdog.shared:  # replicas: was the whole cluster down?
            try:
                await self.watchdog.after_downtime()
            except Exception:  # the database may be down too: the rounds will retry it
                log.exception("checking for downtime failed")
        self._tasks = [
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            asyncio.create_task(self.scheduler.run(), name="scheduler"),
            asyncio.create_task(self.watchdog.run(), name="watchdog"),
            asyncio.create_task(self.heads.run(), name="audit heads"),
        ]

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop taking new work; let sends in flight finish and be recorded.

        Each part is asked to stop and finishes the round it is in, so no transaction is cut
        short and nothing is left ``sending``.  Only a part still busy after ``grace``
        seconds is cancelled.
        """
        if self._tasks:
            log.info(
                "engine stopping: waiting for %d sends in flight to finish and be recorded",
                len(self.dispatcher.in_flight),
            )
        for part in (self.heads, self.watchdog, self.scheduler, self.dispatcher):
            part.stop()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for task in late:
                log.warning("%s did not stop within %.0f s; cancelling it", task.get_name(), grace)
                task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("%s had failed", task.get_name())
        self._tasks = []

    async def lag(self) -> Lag:
        return await measure(self.db, self.clock.now())

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)
