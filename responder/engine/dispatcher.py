"""The dispatcher: takes due notifications from the outbox and sends them through apprise.

One round:

1. Clear the wake-up flag; let requests being answered go first (:mod:`.foreground`, at most
   50 ms); then claim due notifications (``queued`` → ``sending``) with one
   conditional UPDATE, as many as there are free sending slots, and record an attempt for
   each in the same transaction.
2. Render each message here, and send it in the sending process (:mod:`.sending_process`: apprise in
   a child process, bounded concurrency).  A send is awaited until it has finished, and
   never retried beside itself: a send that outlives a timeout may still complete, and a
   retry on the same channel would deliver the message twice.  Only a send still running
   after ``alerts.send_timeout`` is given up on, and then the next channel is tried.
3. Record the outcome (group-committed with the outcomes that finished meanwhile, one
   transaction for all): ``sent``; or retry the same channel with exponential
   back-off and jitter (not after a send given up on: the gateway may still be taking it);
   or fail over to the person's next channel; or, with every channel
   spent, ``failed`` — and the administrators are told (the watchdog message).  A record the
   database refuses (locked by another process) is tried again, not dropped.
4. Sleep until the next queued notification is due, a send finishes, or a wake-up.

After a crash, notifications left ``sending`` are queued again on the same channel (their
attempt is recorded as ``unknown``): nothing is lost.  If the crash fell in the milliseconds
between a gateway accepting a message and this process committing ``sent``, the message goes
out again carrying the same ``X-Responder-Notification`` key, which an HTTP gateway can use to
drop it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from datetime import datetime, timedelta

from responder.clock import Clock
from responder.config import Config
from responder.engine import compose, outbox
from responder.engine.apprise_call import Outcome
from responder.engine.failures import INTERRUPTED, NOT_BUILT
from responder.engine.foreground import Foreground
from responder.engine.loop import Loop
from responder.engine.messages import channel_kind
from responder.engine.metrics import Metrics
from responder.engine.sending_process import Sender
from responder.errors import Unavailable
from responder.rows import Notification
from responder.store import Database, audit
from responder.timeutil import from_db, to_db

log = logging.getLogger("responder.dispatcher")
LEASE = timedelta(minutes=10)
# Pauses (real seconds) between tries to record an outcome the database refused (locked, busy):
# a notification whose outcome is not recorded stays 'sending' until the next restart.
RECORD_RETRY = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Dispatcher(Loop):
    name = "dispatcher"

    def __init__(
        self,
        db: Database,
        cfg: Config,
        clock: Clock,
        secret: bytes,
        metrics: Metrics,
        foreground: Foreground | None = None,
    ) -> None:
        super().__init__(db, cfg, clock, secret)
        self.metrics = metrics
        self.slots = cfg.alerts.concurrency
        self.sender = Sender(timeout=cfg.alerts.send_timeout.total_seconds())
        self.foreground = foreground or Foreground()
        self.in_flight: set[asyncio.Task[None]] = set()
        self._outcomes: list[tuple[Notification, Outcome, asyncio.Future[None]]] = []
        self._recording = asyncio.Lock()
        self.recovered = False  # what a previous process left half-sent is queued again

    # -- 0. after a crash --------------------------------------------------------------

    async def recover(self) -> int:
        """Queue again what a previous process left half-sent."""
        now = self.clock.now()

        def requeue(tx: sqlite3.Connection) -> int:
            tx.execute(
                "UPDATE attempts SET outcome = 'unknown', finished_at = ?, error = ?"
                " WHERE outcome = 'started'",
                (to_db(now), INTERRUPTED),
            )
            # The interrupted try counts: a message that crashes the process every time
            # moves on to the next channel (and finally fails) instead of looping forever.
            n = tx.execute(
                "UPDATE notifications SET status = 'queued', lease_until = NULL,"
                " attempt = attempt + 1, next_attempt_at = ? WHERE status = 'sending'",
                (to_db(now),),
            ).rowcount
            if n:
                audit.append(tx, now, "dispatcher", "notifications.recovered", "-", {"count": n})
            return n

        return await self.db.transact(requeue)

    # -- 1. claim ----------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Notification]:
        if limit <= 0:
            return []
        now = self.clock.now()

        def take(tx: sqlite3.Connection) -> list[Notification]:
            rows = tx.execute(
                "UPDATE notifications SET status = 'sending', lease_until = ?"
                " WHERE id IN (SELECT id FROM notifications WHERE status = 'queued'"
                " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?)"
                " AND status = 'queued' RETURNING *",
                (to_db(now + LEASE), to_db(now), limit),
            ).fetchall()
            claimed = [Notification.of(r) for r in rows]
            tx.executemany(
                "INSERT INTO attempts (notification_id, channel, started_at) VALUES (?,?,?)",
                [(n.id, n.channel, to_db(now)) for n in claimed],
            )
            return claimed

        return await self.db.transact(take)

    async def next_due(self) -> datetime | None:
        row = await self.db.fetchone(
            "SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'queued'"
        )
        return from_db(row[0]) if row and row[0] else None

    # -- 2. send -----------------------------------------------------------------------

    async def deliver(self, n: Notification, facts: compose.Facts) -> None:
        channel = n.channel
        try:
            url, title, body = compose.message(self.cfg, self.secret, n, facts, self.clock.now())
        except Exception as e:  # the message cannot even be built: count it as a failed try
            outcome = Outcome(False, f"{NOT_BUILT}{type(e).__name__}: {e}")
        else:
            # Shielded: a shutdown waits for the send instead of forgetting it in flight.
            outcome = await asyncio.shield(
                self.sender.send(url, title, body, channel_kind(channel))
            )
        self.metrics.observe("send_duration_seconds", outcome.seconds, channel=channel)
        self.metrics.inc(
            "send_attempts_total", channel=channel, outcome="sent" if outcome.ok else "error"
        )
        await self._record(n, outcome)
        if outcome.ok:
            log.info(
                "sent notification %s to %s via %s in %.0f ms",
                n.id, n.person_id, channel, outcome.seconds * 1000,
            )  # fmt: skip
        else:  # the error is already scrubbed of credentials and contacts
            log.warning(
                "notification %s to %s via %s failed: %s",
                n.id, n.person_id, channel, outcome.error,
            )  # fmt: skip

    async def _record(self, n: Notification, outcome: Outcome) -> None:
        """Record an outcome, group-committed with the others that finished meanwhile.

        One transaction (one fsync) records every outcome that is waiting, so a burst of
        sends is not throttled by a commit per message; a lone message is recorded at once.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.append((n, outcome, done))
        async with self._recording:  # one group transaction at a time
            if self._outcomes:  # else a previous group already took ours
                batch, self._outcomes = self._outcomes, []
                await self._record_batch(batch)
        await done

    async def _record_batch(
        self, batch: list[tuple[Notification, Outcome, asyncio.Future[None]]]
    ) -> None:
        tries = 0
        while True:
            try:
                now = self.clock.now()

                def record(tx: sqlite3.Connection, now: datetime = now) -> list[str]:
                    return [self.record_in(tx, n, outcome, now) for n, outcome, _ in batch]

                statuses = await self.db.transact(record)
            except Exception as e:
                # While the database cannot be written (full, read-only, locked) keep trying:
                # the sends happened, and an outcome given up on goes out again after a restart.
                refused = isinstance(e, Unavailable)
                if (tries >= len(RECORD_RETRY) and not refused) or self.stopping:
                    for *_, done in batch:
                        done.set_exception(e)
                    return
                pause = RECORD_RETRY[min(tries, len(RECORD_RETRY) - 1)]
                tries += 1
                if not refused:  # a refusal is logged by the store, once
                    log.warning(
                        "recording %d outcomes failed (%s); trying again in %.1f s",
                        len(batch),
                        e,
                        pause,
                    )
                await asyncio.sleep(pause)
            else:
                for (n, outcome, _), status in zip(batch, statuses, strict=True):
                    if status == "failed":
                        self.metrics.inc("notifications_failed_total", channel=n.channel)
                        self._log_failed(n, outcome)
                for *_, done in batch:
                    done.set_result(None)
                return

    def _log_failed(self, n: Notification, outcome: Outcome) -> None:
        """A person not reached on any channel is an ERROR in the log, not only a count."""
        person = self.cfg.person(n.person_id)
        who = person.name if person else n.person_id
        told = "" if n.kind == "watchdog" else "; the administrators are told"
        log.error(
            "notification %s to %s (%s) failed on every channel (last: %s)%s",
            n.id, n.person_id, who, outcome.error, told,
        )  # fmt: skip

    # -- 3. record -----------------------------------------------------------------------

    def backoff(self, attempt: int) -> timedelta:
        base = self.cfg.alerts.retry_base * (2 ** (attempt - 1))
        return min(self.cfg.alerts.retry_max, base) * random.uniform(0.75, 1.25)

    def record_in(
        self, tx: sqlite3.Connection, n: Notification, outcome: Outcome, now: datetime
    ) -> str:
        """Record one outcome inside the caller's transaction: sent; or again later on the
        same channel (back-off with jitter); or the next channel; or failed.  Returns the
        notification's new status."""
        tx.execute(
            "UPDATE attempts SET outcome = ?, finished_at = ?, error = ?"
            " WHERE notification_id = ? AND outcome = 'started'",
            ("sent" if outcome.ok else "error", to_db(now), outcome.error or None, n.id),
        )
        if outcome.ok:
            tx.execute(
                "UPDATE notifications SET status = 'sent', sent_at = ?, sent_channel = ?,"
                " lease_until = NULL WHERE id = ? AND status = 'sending'",
                (to_db(now), n.channel, n.id),
            )
            return "sent"
        attempt = n.attempt + 1
        index = n.channel_index
        if outcome.same_channel_again and attempt < self.cfg.alerts.attempts_per_channel:
            status, next_at = "queued", now + self.backoff(attempt)
        elif index + 1 < len(n.channels):
            status, next_at, index, attempt = "queued", now, index + 1, 0
        else:
            status, next_at = "failed", now
        tx.execute(
            "UPDATE notifications SET status = ?, attempt = ?, channel_index = ?,"
            " next_attempt_at = ?, last_error = ?, lease_until = NULL"
            " WHERE id = ? AND status = 'sending'",
            (status, attempt, index, to_db(next_at), outcome.error, n.id),
        )
        if status == "failed":
            audit.append(
                tx,
                now,
                "dispatcher",
                "notification.failed",
                n.incident_id or "-",  # a watchdog message has no incident
                {"notification": n.id, "person": n.person_id, "error": outcome.error},
            )
            if n.kind != "watchdog":
                self.tell_admins(tx, n, now)
        return status

    def tell_admins(self, tx: sqlite3.Connection, n: Notification, now: datetime) -> None:
        """A message that failed on every channel is itself news for the administrators."""
        person = self.cfg.person(n.person_id)
        who = person.name if person else n.person_id
        # Who, of which unit, at which number: the administrator is asked to phone them.
        unit = self.cfg.unit(person.unit) if person else None
        zh_who = f"{unit.name if unit else ''}{who}"
        en_who = f"{who} ({unit.name_en or unit.name})" if unit else who
        phone = person.phone if person and person.phone else ""
        en_phone = f" on {person.phone}" if person and person.phone else ""
        outbox.tell_admins(
            tx,
            self.cfg,
            self.secret,
            incident_id=n.incident_id,
            # Short: it goes by SMS after the incident's title (see templates/messages/sms.zh.j2).
            zh=f"{zh_who}所有渠道均未收到提醒,请致电{phone}并检查渠道配置",
            en=f"The alert to {en_who} failed on every channel: phone them{en_phone} and check"
            " the channel settings",
            now=now,
        )

    # -- 4. the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Start the sending process and run the rounds; on stop, claim nothing more and wait
        for the sends in flight."""
        try:
            await self.sender.start()  # now, rather than delay the first message by it
        except Exception:
            log.exception("the sending process did not start; the first send tries again")
        try:
            await super().run()
        finally:
            await self.drain()

    async def round(self) -> datetime | None:
        if not self.recovered:  # before any claim; again next round if the disk is full
            await self.recover()
            self.recovered = True
        await self.foreground.idle()  # requests first (see .foreground)
        claimed = await self.claim(self.slots - len(self.in_flight))
        facts = await compose.facts(self.db, claimed) if claimed else {}
        for n in claimed:
            task = asyncio.create_task(self._deliver_and_wake(n, facts))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        if len(self.in_flight) >= self.slots:
            return None  # full: wait for a send to finish (it wakes us)
        return await self.next_due()

    async def _deliver_and_wake(self, n: Notification, facts: compose.Facts) -> None:
        try:
            await self.deliver(n, facts)
        except Unavailable as e:  # only when stopping: the store refused even to the end
            log.warning("notification %s could not be recorded (%s); it is sent again after a"
                        " restart", n.id, e.en)  # fmt: skip
        except Exception:
            log.exception("recording notification %s failed; it is retried after a restart", n.id)
        finally:
            self.wakeup.set()

    async def drain(self, grace: float = 30.0) -> None:
        """On shutdown: let sends in flight finish and record, so none is left half-done."""
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=grace)
        await self.sender.close()
