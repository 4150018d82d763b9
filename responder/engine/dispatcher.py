"""The dispatcher: takes due notifications from the outbox and sends them through apprise.

One round:

1. Clear the wake-up flag; let requests being answered go first (:mod:`.foreground`, at most
   50 ms).  If the sending process is not ready (it could not start: see
   :mod:`.sending_process`), claim nothing and try to start it again a little later: messages
   wait queued instead of being spent on a process that cannot send.
2. Start the next round of messages that failed on every channel and are due to be tried
   again (``failed`` → ``queued``) — unless they no longer matter (acknowledged, obligation met
   or waived, incident closed, a later alert delivered: :data:`.outbox.WHY_MOOT`), which are
   tried no more and say why.
3. Claim due notifications (``queued`` → ``sending``) with one conditional UPDATE, the most
   urgent first (the service's own alarms, then breach alerts, then reminders: see
   :func:`.outbox.priority_of`), as many as there are free sending slots, and record an
   attempt for each in the same transaction.
4. Render each message here, and send it in the sending process (:mod:`.sending_process`: apprise in
   a child process, bounded concurrency).  A send is awaited until it has finished, and
   never retried beside itself: a send that outlives a timeout may still complete, and a
   retry on the same channel would deliver the message twice.  Only a send still running
   after ``alerts.send_timeout`` is given up on, and then the next channel is tried.
5. Record the outcome (group-committed with the outcomes that finished meanwhile, one
   transaction for all): ``sent``; or retry the same channel with exponential
   back-off and jitter (not after a send given up on: the gateway may still be taking it);
   or fail over to the person's next channel; or, with every channel
   spent, ``failed`` with the time of its next round (``retry_at``: ``retry_base`` doubling up
   to ``alerts.failed_retry_max``; a later round tries each channel once).  The first time a
   message fails on every channel, the administrators are told, on every channel they have;
   never again for the same message.  A send that succeeds on a channel brings forward what
   waits on that channel (a retry after a failure there, a next round that can use it): a
   channel that works again is used at once.  A record the database refuses (locked by another
   process) is tried again, not dropped.
6. Sleep until the next queued notification or round is due, a send finishes, or a wake-up.

After a crash, notifications left ``sending`` are queued again on the same channel (their
attempt is recorded as ``unknown``): nothing is lost.  On SQLite one process owns the
database (its lock file), so at start everything left ``sending`` is its own and is queued
again at once.  On PostgreSQL several replicas send: a claim carries a lease
(:func:`lease`), and every round queues again the claims whose lease ran out — a replica
that died holding them; a live one records its outcome long before.  If the crash fell in the milliseconds
between a gateway accepting a message and this process committing ``sent``, the message goes
out again carrying the same ``X-Responder-Notification`` key, which an HTTP gateway can use to
drop it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from responder.clock import Clock
from responder.config import Config
from responder.engine import compose, outbox
from responder.engine.apprise_call import Outcome
from responder.engine.failures import INTERRUPTED, NOT_BUILT
from responder.engine.foreground import Foreground
from responder.engine.loop import Loop
from responder.engine.messages import CHANNEL_KINDS, ENV, LANGS, channel_kind
from responder.engine.metrics import Metrics
from responder.engine.outbox import STILL_MATTERS, WHY_MOOT
from responder.engine.sending_process import RESTART_PAUSE, Sender, SenderUnavailable
from responder.errors import Unavailable
from responder.rows import Notification
from responder.store import Database, audit
from responder.timeutil import from_db, to_db

log = logging.getLogger("responder.dispatcher")
# A claim's lease: the longest a send can take (it is given up on after alerts.send_timeout)
# twice over, and time to record the outcome.  Another replica takes the claim back after it.
LEASE_MARGIN = timedelta(seconds=10)


def lease(cfg: Config) -> timedelta:
    return 2 * cfg.alerts.send_timeout + LEASE_MARGIN


# Pauses (real seconds) between tries to record an outcome the database refused (locked, busy):
# a notification whose outcome is not recorded stays 'sending' until the next restart.
RECORD_RETRY = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def compile_templates() -> None:
    """Compile every message template now, not in the first message's way (~10–20 ms each on
    first use)."""
    for kind in CHANNEL_KINDS:
        for lang in LANGS:
            ENV.get_template(f"{kind}.{lang}.j2")


@dataclass(frozen=True)
class Recorded:
    """A notification's state after an outcome was recorded."""

    status: str  # 'sent', 'queued' (again, or on the next channel) or 'failed'
    rounds: int  # rounds over every channel that failed so far
    retry_at: datetime | None = None  # failed: when its next round starts


class Dispatcher(Loop):
    name = "dispatcher"
    follows_cluster = True  # another replica queues messages; a dead one leaves claims

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
        # When a message that had failed on every channel last reached its person (/healthz).
        self.recovered_at: datetime | None = None
        self._recording = asyncio.Lock()
        self.recovered = False  # what a previous process left half-sent is queued again

    # -- after a crash --------------------------------------------------------------

    async def recover(self) -> int:
        """Queue again what a previous process left half-sent: on SQLite, everything left
        ``sending`` (this process owns the database); with replicas, the claims whose lease
        ran out (their replica died)."""
        now = self.clock.now()
        # Which claims are abandoned, as SQL over a notification: all, or those past lease.
        # (A message carried by another is sent with it: it follows its carrier's state.)
        stale = "status = 'sending' AND carried_by IS NULL" + (
            " AND lease_until <= :now" if self.shared else ""
        )
        if self.shared:  # every round: one indexed look first, without a write transaction
            found = await self.db.fetchone(
                f"SELECT 1 FROM notifications WHERE {stale} LIMIT 1", {"now": to_db(now)}
            )
            if found is None:
                return 0

        def requeue(tx: sqlite3.Connection) -> int:
            tx.execute(
                "UPDATE attempts SET outcome = 'unknown', finished_at = :now, error = :why"
                " WHERE outcome = 'started'"
                f" AND notification_id IN (SELECT id FROM notifications WHERE {stale})",
                {"now": to_db(now), "why": INTERRUPTED},
            )
            # The interrupted try counts: a message that crashes the process every time
            # moves on to the next channel (and finally fails) instead of looping forever.
            n = tx.execute(
                "UPDATE notifications SET status = 'queued', lease_until = NULL,"
                f" attempt = attempt + 1, next_attempt_at = :now WHERE {stale}",
                {"now": to_db(now)},
            ).rowcount
            if n:
                outbox.follow_all_carriers(tx, "sending")
                audit.append(tx, now, "dispatcher", "notifications.recovered", "-", {"count": n})
            return n

        return await self.db.transact(requeue)

    # -- 2. the next round of messages that failed on every channel -----------------------

    async def next_rounds(self) -> int:
        """Queue again the failed messages whose next round is due and that still matter;
        those that no longer matter are tried no more, and say why.  Returns how many were
        queued."""
        now = self.clock.now()
        due = await self.db.fetchone(
            "SELECT 1 FROM notifications WHERE retry_at IS NOT NULL AND retry_at <= ? LIMIT 1",
            (to_db(now),),
        )
        if due is None:  # the usual answer, without a write transaction
            return 0
        params = {"now": to_db(now)}

        def start(tx: sqlite3.Connection) -> int:
            ended = tx.execute(
                f"UPDATE notifications AS n SET retry_at = NULL, retry_ended = ({WHY_MOOT})"
                " WHERE n.retry_at IS NOT NULL AND n.retry_at <= :now AND n.status = 'failed'"
                f" AND NOT {STILL_MATTERS} RETURNING id, incident_id, person_id, retry_ended",
                params,
            ).fetchall()
            for row in ended:
                audit.append(
                    tx,
                    now,
                    "dispatcher",
                    "notification.retries_ended",
                    row["incident_id"] or "-",
                    {"notification": row["id"], "person": row["person_id"],
                     "why": row["retry_ended"]},
                )  # fmt: skip
            # The round starts on the channel chosen when it was planned (the first, or one
            # that has just worked again); due at its planned time, for the lag's sake.
            started = tx.execute(
                "UPDATE notifications SET status = 'queued', attempt = 0,"
                " next_attempt_at = retry_at, retry_at = NULL"
                " WHERE retry_at IS NOT NULL AND retry_at <= :now AND status = 'failed'"
                " RETURNING id",
                params,
            ).fetchall()
            outbox.follow_carriers(tx, [r["id"] for r in ended] + [r[0] for r in started])
            return len(started)

        return await self.db.transact(start)

    # -- 3. claim ----------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Notification]:
        """Claim the most urgent due messages.  Rows carried by another message (an obligation
        told in the same message as another: see :func:`.fire.queue_merged`) are never sent
        themselves: they follow their carrier."""
        if limit <= 0:
            return []
        now = self.clock.now()

        def take(tx: sqlite3.Connection) -> list[Notification]:
            rows = tx.execute(
                "UPDATE notifications SET status = 'sending', lease_until = ?"
                " WHERE id IN (SELECT id FROM notifications WHERE status = 'queued'"
                " AND next_attempt_at <= ? AND carried_by IS NULL"
                " ORDER BY priority, next_attempt_at, id LIMIT ?)"
                " AND status = 'queued' RETURNING *",
                (to_db(now + lease(self.cfg)), to_db(now), limit),
            ).fetchall()
            claimed = [Notification.of(r) for r in rows]
            tx.executemany(
                "INSERT INTO attempts (notification_id, channel, started_at) VALUES (?,?,?)",
                [(n.id, n.channel, to_db(now)) for n in claimed],
            )
            outbox.follow_carriers(tx, [n.id for n in claimed])
            return claimed

        return await self.db.transact(take)

    async def next_due(self) -> datetime | None:
        """When the next queued notification or the next round of a failed one is due."""
        row = await self.db.fetchone(
            "SELECT (SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'queued'),"
            " (SELECT MIN(retry_at) FROM notifications WHERE retry_at IS NOT NULL)"
        )
        times = [t for t in (from_db(v) for v in (row or ())) if t is not None]
        return min(times) if times else None

    # -- 4. send -----------------------------------------------------------------------

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

                def record(tx: sqlite3.Connection, now: datetime = now) -> list[Recorded]:
                    recorded = [self.record_in(tx, n, outcome, now) for n, outcome, _ in batch]
                    working = {n.channel for n, outcome, _ in batch if outcome.ok}
                    for channel in sorted(working):
                        self.bring_forward(tx, channel, now)
                    return recorded

                results = await self.db.transact(record)
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
                for (n, outcome, _), result in zip(batch, results, strict=True):
                    self._report(n, outcome, result)
                for *_, done in batch:
                    done.set_result(None)
                return

    def _report(self, n: Notification, outcome: Outcome, result: Recorded) -> None:
        """Metrics and log lines for one recorded outcome.  A person not reached on any
        channel is an ERROR in the log, not only a count; a later round failing again is a
        warning; a message delivered after failed rounds says so."""
        person = self.cfg.person(n.person_id)
        who = f"{n.person_id} ({person.name if person else n.person_id})"
        if result.status == "sent":
            if result.rounds:
                self.recovered_at = self.clock.now()
                log.warning(
                    "notification %s to %s delivered via %s after %d failed rounds",
                    n.id, who, n.channel, result.rounds,
                )  # fmt: skip
            return
        if result.status != "failed":
            return
        retry = f"; tried again at {to_db(result.retry_at)}" if result.retry_at else ""
        if result.rounds > 1:
            self.metrics.inc("failed_rounds_total", channel=n.channel)
            log.warning(
                "notification %s to %s failed again on every channel (round %d, last: %s)%s",
                n.id, who, result.rounds, outcome.error, retry,
            )  # fmt: skip
            return
        self.metrics.inc("notifications_failed_total", channel=n.channel)
        told = "" if n.kind == "watchdog" else "; the administrators are told"
        log.error(
            "notification %s to %s failed on every channel (last: %s)%s%s",
            n.id, who, outcome.error, told, retry,
        )  # fmt: skip

    # -- 5. record -----------------------------------------------------------------------

    def backoff(self, attempt: int) -> timedelta:
        base = self.cfg.alerts.retry_base * (2 ** (attempt - 1))
        return min(self.cfg.alerts.retry_max, base) * random.uniform(0.75, 1.25)

    def round_wait(self, rounds: int) -> timedelta:
        """How long after its ``rounds``-th failed round a message is tried again:
        ``retry_base`` doubling, with jitter, never more than ``failed_retry_max``."""
        alerts = self.cfg.alerts
        wait = alerts.retry_base * (2 ** min(rounds - 1, 30)) * random.uniform(0.75, 1.25)
        return min(alerts.failed_retry_max, wait)

    def record_in(
        self, tx: sqlite3.Connection, n: Notification, outcome: Outcome, now: datetime
    ) -> Recorded:
        """Record one outcome inside the caller's transaction: sent; or again later on the
        same channel (back-off with jitter); or the next channel; or failed, with its next
        round planned.  Returns the notification's new state."""
        tx.execute(
            "UPDATE attempts SET outcome = ?, finished_at = ?, error = ?"
            " WHERE notification_id = ? AND outcome = 'started'",
            ("sent" if outcome.ok else "error", to_db(now), outcome.error or None, n.id),
        )
        if outcome.ok:
            sent = tx.execute(
                "UPDATE notifications SET status = 'sent', sent_at = ?, sent_channel = ?,"
                " lease_until = NULL WHERE id = ? AND status = 'sending' RETURNING rounds",
                (to_db(now), n.channel, n.id),
            ).fetchone()
            outbox.follow_carriers(tx, [n.id])
            return Recorded("sent", sent[0] if sent else 0)
        (rounds,) = tx.execute("SELECT rounds FROM notifications WHERE id = ?", (n.id,)).fetchone()
        attempt = n.attempt + 1
        index = n.channel_index
        # The first round gives each channel its tries; a later round, one each (the wait
        # between rounds is the back-off).
        tries = self.cfg.alerts.attempts_per_channel if rounds == 0 else 1
        retry_at: datetime | None = None
        if outcome.same_channel_again and attempt < tries:
            status, next_at = "queued", now + self.backoff(attempt)
        elif index + 1 < len(n.channels):
            status, next_at, index, attempt = "queued", now, index + 1, 0
        else:  # every channel failed: the next round starts on the first channel
            status, next_at, index, attempt = "failed", now, 0, 0
            rounds += 1
            retry_at = now + self.round_wait(rounds)
        tx.execute(
            "UPDATE notifications SET status = ?, attempt = ?, channel_index = ?,"
            " next_attempt_at = ?, last_error = ?, lease_until = NULL, rounds = ?, retry_at = ?"
            " WHERE id = ? AND status = 'sending'",
            (status, attempt, index, to_db(next_at), outcome.error, rounds,
             to_db(retry_at) if retry_at else None, n.id),
        )  # fmt: skip
        outbox.follow_carriers(tx, [n.id])
        if status == "failed" and rounds == 1:  # the first time only: not once per round
            audit.append(
                tx,
                now,
                "dispatcher",
                "notification.failed",
                n.incident_id or "-",  # a watchdog message has no incident
                {"notification": n.id, "person": n.person_id, "error": outcome.error,
                 "retry_at": to_db(retry_at) if retry_at else None},
            )  # fmt: skip
            if n.kind != "watchdog":
                self.tell_admins(tx, n, now)
        return Recorded(status, rounds, retry_at)

    def bring_forward(self, tx: sqlite3.Connection, channel: str, now: datetime) -> None:
        """A send on ``channel`` just worked: what waits on it goes now — a retry after a
        failure on it, and the next round of a failed message that can use it (starting on
        it, not on a first channel that may still be down)."""
        params = {"now": to_db(now), "channel": channel}
        tx.execute(
            "UPDATE notifications SET next_attempt_at = :now"
            " WHERE status = 'queued' AND next_attempt_at > :now"
            " AND json_extract(channels, '$[' || channel_index || ']') = :channel",
            params,
        )
        tx.execute(
            "UPDATE notifications SET retry_at = :now, channel_index ="
            " (SELECT CAST(c.key AS INTEGER) FROM json_each(notifications.channels) AS c"
            "  WHERE c.value = :channel LIMIT 1)"
            " WHERE retry_at IS NOT NULL AND retry_at > :now AND status = 'failed'"
            " AND EXISTS (SELECT 1 FROM json_each(notifications.channels) AS c"
            "  WHERE c.value = :channel)"
            # Not one that could not even be built (a person removed from the configuration):
            # a channel working again changes nothing for it.
            " AND substr(last_error, 1, length(:not_built)) != :not_built",
            {**params, "not_built": NOT_BUILT},
        )

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
            # At once on each channel they have: this one must not wait for a failover
            # through the channels that may be the very ones down.
            every_channel=True,
        )

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the sending process (ready before the first message: apprise's plugins
        loaded), run the rounds (the first queues again what a previous process left
        half-sent); on stop, claim nothing more and wait for the sends in flight."""
        starting = asyncio.create_task(self._sender_ready())  # meanwhile: ~1 s, a process
        try:
            await asyncio.to_thread(compile_templates)
        except BaseException:
            starting.cancel()  # leaves no child behind (see Sender.start)
            raise
        await starting
        try:
            await super().run()
        finally:
            await self.drain()

    async def _sender_ready(self) -> bool:
        """Whether the sending process is ready, starting it if it is not.  When it cannot
        start, a wake-up after ``RESTART_PAUSE`` real seconds tries again (the reason is
        logged, and shown by /healthz)."""
        if self.sender.ready:
            return True
        try:
            await self.sender.start()
        except SenderUnavailable:
            asyncio.get_running_loop().call_later(RESTART_PAUSE, self.wake)
            return False
        return True

    async def round(self) -> datetime | None:
        if not self.recovered or self.shared:  # before any claim; again if the disk is full
            await self.recover()
            self.recovered = True
        await self.foreground.idle()  # requests first (see .foreground)
        if not await self._sender_ready():
            return None  # nothing claimed: woken to try the start again
        await self.next_rounds()
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
