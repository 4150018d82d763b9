"""The engine as one object: start the scheduler, dispatcher and watchdog; stop them cleanly.

``Engine.ops`` is the service layer wired to wake the scheduler, so a declaration or a
milestone takes effect at once instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib

from responder.clock import Clock
from responder.config import Config
from responder.engine.dispatcher import Dispatcher
from responder.engine.metrics import Metrics
from responder.engine.scheduler import Scheduler
from responder.engine.watchdog import Lag, Watchdog, measure
from responder.ops import Ops
from responder.store import Database


class Engine:
    def __init__(self, db: Database, cfg: Config, clock: Clock, secret: bytes) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(db, cfg, clock, secret, self.metrics)
        self.scheduler = Scheduler(db, cfg, clock, secret, self.metrics, self.dispatcher.wake)
        self.watchdog = Watchdog(db, cfg, clock, secret)
        self.ops = Ops(db, cfg, clock, wake=self.scheduler.wake)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            asyncio.create_task(self.scheduler.run(), name="scheduler"),
            asyncio.create_task(self.watchdog.run(self.dispatcher.wake), name="watchdog"),
        ]

    async def stop(self) -> None:
        """Stop taking new work; let sends in flight finish and be recorded."""
        for task in reversed(self._tasks):
            task.cancel()
        for task in reversed(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def lag(self) -> Lag:
        return await measure(self.db, self.clock.now())

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)
