"""Plain helpers for the alert engine's tests (the fixtures are in :mod:`tests.engine_fixtures`).

* :func:`ops_of` — the service layer beside an engine, waking it (as the app wires it).
* :func:`wire` — point a config's channels at an HTTP sink and an SMTP sink.
* :func:`settle` — wait (in real time, briefly) until the engine has done everything due now.
* :func:`quiet` — wait until every task sleeping on the FakeClock has gone back to sleep.
* :func:`queue` — put one notification straight into the outbox.
* :func:`drive` — move the FakeClock from retry to retry until a notification is final.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime, timedelta
from typing import Any

from responder.clock import FakeClock
from responder.config import Config
from responder.engine import outbox
from responder.engine.runner import Engine
from responder.ops import Ops
from responder.store import Database
from responder.timeutil import from_db, to_db

SECRET = b"k" * 32


def ops_of(engine: Engine) -> Ops:
    """The service layer beside ``engine``, waking it as the application wires it."""
    return Ops(engine.db, engine.cfg, engine.clock, wake=engine.changed)


def wire(cfg: Config, http_port: int, smtp_port: int) -> Config:
    """Point the config's channels at an HTTP sink and an SMTP sink."""
    base = f"json://127.0.0.1:{http_port}"
    cfg.channels = {
        "sms": base + "/sms?:to={phone}",
        "voice": base + "/voice?:to={phone}",
        "chat": base + "/chat?:to={id}",
        "email": f"mailto://127.0.0.1:{smtp_port}/?from=responder%40example.gov.cn"
        "&to={email}&mode=insecure",
    }
    cfg.alerts.retry_base = timedelta(seconds=10)
    return cfg


async def unsettled(db: Database, now_db: str) -> int:
    """Steps due and not fired, plus notifications due and not finished (a failed one whose
    next round is due included)."""
    row = await db.fetchone(
        "SELECT (SELECT COUNT(*) FROM notifications WHERE status = 'sending'"
        "  OR (status = 'queued' AND next_attempt_at <= ?) OR retry_at <= ?),"
        " (SELECT COUNT(*) FROM steps WHERE status = 'pending' AND due_at <= ?)",
        (now_db, now_db, now_db),
    )
    assert row is not None
    return int(row[0]) + int(row[1])


async def settle(engine: Engine, limit: float = 5.0) -> None:
    """Let the engine's tasks run until nothing is due now: every due step fired and every due
    notification handed to its channel (real I/O included).  Polls for at most ``limit`` real
    seconds."""
    deadline = time.monotonic() + limit
    while True:
        await asyncio.sleep(0.002)  # yield to the loop while sends finish on 127.0.0.1
        if await unsettled(engine.db, to_db(engine.clock.now())) == 0:
            return
        if time.monotonic() > deadline:
            rows = await engine.db.fetchall(
                "SELECT id, kind, person_id, status, channel_index, attempt, next_attempt_at"
                " FROM notifications WHERE status IN ('queued', 'sending')"
            )
            steps = await engine.db.fetchall(
                "SELECT id, name, due_at FROM steps WHERE status = 'pending' AND due_at <= ?",
                (to_db(engine.clock.now()),),
            )
            raise AssertionError(
                f"engine did not settle at {to_db(engine.clock.now())}:"
                f" {[tuple(r) for r in rows]} {[tuple(s) for s in steps]}"
            )


async def quiet(clock: FakeClock, limit: float = 5.0) -> None:
    """Wait until every task that sleeps on ``clock`` has handled the clock's present time and
    gone back to sleep.  Polls for at most ``limit`` real seconds."""
    deadline = time.monotonic() + limit
    while not clock.all_asleep():
        assert time.monotonic() < deadline, "a task on the FakeClock did not go back to sleep"
        await asyncio.sleep(0.002)


async def queue(
    db: Database,
    now: datetime,
    person_id: str,
    channels: list[str],
    *,
    kind: str = "notice",
    incident_id: str | None = None,
    obligation_id: int | None = None,
    step_id: int | None = None,
) -> int:
    """One notification straight into the outbox (as the scheduler would queue it)."""

    def job(tx: sqlite3.Connection) -> Any:
        return outbox.queue(
            tx,
            SECRET,
            incident_id=incident_id,
            obligation_id=obligation_id,
            step_id=step_id,
            person_id=person_id,
            channels=channels,
            kind=kind,
            context={},
            now=now,
        )

    return await db.transact(job)


async def notification(db: Database, nid: int) -> Any:
    row = await db.fetchone("SELECT * FROM notifications WHERE id = ?", (nid,))
    assert row is not None
    return row


async def attempts(db: Database, nid: int) -> list[Any]:
    return await db.fetchall("SELECT * FROM attempts WHERE notification_id = ? ORDER BY id", (nid,))


async def drive(engine: Engine, nid: int, rounds: int = 30) -> Any:
    """Move the FakeClock from one retry to the next until the notification is final."""
    assert isinstance(engine.clock, FakeClock)
    for _ in range(rounds):
        await settle(engine)
        row = await notification(engine.db, nid)
        if row["status"] in ("sent", "failed", "cancelled"):
            return row
        due = from_db(row["next_attempt_at"])
        assert due is not None and due > engine.clock.now()
        engine.clock.set(due)
    raise AssertionError(f"notification {nid} still {row['status']} after {rounds} rounds")
