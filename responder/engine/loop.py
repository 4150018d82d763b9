"""What the scheduler, the dispatcher and the watchdog share: a loop of rounds that sleeps on
the injected clock until its next piece of work is due, or until it is woken.

One round, for each of them:

1. Clear the wake-up flag *before* looking at the database, so a change committed while the
   round runs wakes the next sleep at once instead of being missed.
2. Do the round's work (:meth:`Loop.round`); it answers when the next work falls due.
3. A round the database refused (disk full, read-only, locked: the store logs why, once) is
   tried again after ``STORAGE_RETRY`` on the clock, or at once when woken; what is due stays
   due.  A round that failed otherwise (a bug) is logged and tried again after a short real
   pause.  Neither stops the clock.
4. Sleep until the next work is due, or until woken; :meth:`Loop.stop` wakes it for the last
   time, and the round in progress finishes first (its transaction commits whole).  With
   replicas (PostgreSQL) the scheduler and the dispatcher sleep no longer than
   ``CLUSTER_POLL``: another replica's change does not wake them, and if that replica dies
   they must find its work.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from responder.clock import Clock
from responder.config import Config
from responder.errors import Unavailable
from responder.store import Database

RETRY_PAUSE = 1.0  # real seconds between failed rounds: no busy loop, no log flood
STORAGE_RETRY = timedelta(seconds=10)  # while the database cannot be written
CLUSTER_POLL = timedelta(seconds=2)  # with replicas: the longest sleep (a few index reads)


class Loop:
    name = "loop"
    follows_cluster = False  # with replicas, sleep at most CLUSTER_POLL (see 4. above)

    def __init__(self, db: Database, cfg: Config, clock: Clock, secret: bytes) -> None:
        self.db = db
        self.cfg = cfg
        self.clock = clock
        self.secret = secret  # keys the acknowledgement links of what it queues
        self.wakeup = asyncio.Event()
        self.stopping = False
        self.log = logging.getLogger(f"responder.{self.name}")
        # Replicas share the database (PostgreSQL).  Only the loops whose work another
        # replica can create (steps, messages) poll for it; the others keep their own pace.
        self.shared = getattr(db, "dialect", "sqlite") == "postgresql"
        polls = self.shared and self.follows_cluster
        self.poll: timedelta | None = CLUSTER_POLL if polls else None

    def wake(self) -> None:
        self.wakeup.set()

    def stop(self) -> None:
        """Finish the round in progress, then return from :meth:`run`."""
        self.stopping = True
        self.wakeup.set()

    async def round(self) -> datetime | None:
        """Do what is due; return when the next work falls due (None: only when woken)."""
        raise NotImplementedError

    async def run(self) -> None:
        while not self.stopping:
            self.wakeup.clear()  # 1.
            try:
                nxt = await self.round()  # 2.
            except asyncio.CancelledError:
                raise
            except Unavailable:  # 3.
                nxt = self.clock.now() + STORAGE_RETRY
            except Exception:
                self.log.exception("%s round failed; trying again", self.name)
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if self.poll is not None:
                cap = self.clock.now() + self.poll
                nxt = cap if nxt is None else min(nxt, cap)
            await self.clock.sleep_until(nxt, self.wakeup)  # 4.
