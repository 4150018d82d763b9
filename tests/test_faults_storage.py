"""The database refusing writes: locked by another process, a full disk, read-only.

Found by a tester: another process holding ``BEGIN EXCLUSIVE`` for 10 s made the first
declaration a 500 ``internal`` after 5 s ("database is locked"); on a 5 MB filesystem 40 of 40
declarations were 500s ("database or disk is full") while ``/healthz`` said ok.

Now each is a 503 the client can act on — ``database_busy`` or ``storage_unavailable``, with
``Retry-After`` — within a bound, and nothing half-written; ``/healthz`` answers 503 saying why;
the engine pauses and resumes by itself, logging each change of state once.

How the faults are made, with real parts:

* The lock: a real second process holds ``BEGIN EXCLUSIVE`` on the same file, as the tester's
  did (in WAL mode that takes the write lock; readers go on).
* A full disk: ``PRAGMA max_page_count`` set to the database's current size on the service's
  writer connection.  SQLite then refuses to grow the file with SQLITE_FULL, "database or disk
  is full" — the very code and message a full filesystem gives (checked on a 5 MB tmpfs: the
  WAL could not grow), and, like it, SQLite rolls the whole transaction back.  A filesystem of
  our own would need a root mount.
* A read-only database: ``PRAGMA query_only`` on the writer connection.  Every write is
  refused with SQLITE_READONLY, "attempt to write a readonly database", as for a file or a
  filesystem mounted read-only (chmod is no test here: the suite may run as root, who writes
  anyway, and an open file keeps its write access).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from responder.engine.loop import STORAGE_RETRY
from responder.errors import Unavailable
from responder.store import Database
from responder.store.db import BUSY_TIMEOUT_MS, RETRY_AFTER
from responder.timeutil import to_db
from responder.web.keys import ENGINE
from tests.engine_helpers import quiet, settle
from tests.web_helpers import PASSWORD, Web, assert_error_body

pytest_plugins = ["tests.web_fixtures"]

INCIDENTS = "/api/v1/incidents"
WAIT = BUSY_TIMEOUT_MS / 1000
MARGIN = 2.0  # seconds beyond the lock wait: only a request that waited twice takes longer
Dump = Callable[[Database], Awaitable[dict[str, list[tuple[Any, ...]]]]]

_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@contextmanager
def held_by_another_process(path: str) -> Iterator[None]:
    """Another program (a backup, an administrator's sqlite3 shell) holds the database's write
    lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)


async def refused_with(resp: Any, code: str) -> dict[str, Any]:
    data = await resp.json()
    assert resp.status == 503, data
    assert_error_body(data)
    assert data["error"] == code, data
    assert resp.headers["Retry-After"] == str(RETRY_AFTER)
    return data


async def health_problems(web: Web) -> list[str]:
    """What ``/healthz`` says is wrong (503), or [] (200).  The engine's own state aside: the
    API tests here run without it."""
    resp = await web.get("/healthz")
    body = await resp.json()
    assert (resp.status == 503) == (body["status"] == "unhealthy")
    return [p for p in body["problems"] if p != "engine not running"]


def lines(
    caplog: pytest.LogCaptureFixture, text: str, logger: str = "responder.store"
) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and text in r.getMessage()]


# -- finding 3: locked by another process -------------------------------------------------------


async def test_a_database_locked_by_another_process_is_a_503_within_a_bound(
    web: Web, dump_tables: Dump, caplog: pytest.LogCaptureFixture
) -> None:
    """Six declarations while another process holds the lock: each is answered 503
    ``database_busy`` with Retry-After after waiting about the busy timeout — none a 500, none
    waiting once per declaration queued ahead of it — and none left anything behind.  Once the
    lock is released the same declaration is accepted."""
    caplog.set_level(logging.INFO, "responder.store")
    await web.get(INCIDENTS)  # the token's use is noted now, not under the lock
    before = await dump_tables(web.db)
    with held_by_another_process(web.db.path):

        async def declare() -> tuple[float, Any]:
            started = time.monotonic()
            resp = await web.post(INCIDENTS, web.declaration())
            await resp.read()
            return time.monotonic() - started, resp

        answers = await asyncio.gather(*(declare() for _ in range(6)))
        for took, resp in answers:
            data = await refused_with(resp, "database_busy")
            assert "未作任何更改" in data["message"] and "nothing was changed" in data["message_en"]
            assert took < WAIT + MARGIN, f"answered after {took:.1f} s"
        assert await dump_tables(web.db) == before
        assert await health_problems(web) == [
            "the database cannot be written: another program holds it locked; changes are"
            " refused and alerts wait"
        ]
    await web.declare()
    assert await health_problems(web) == []
    assert not lines(caplog, "unhandled error", "responder.web")
    assert len(lines(caplog, "cannot be written")) == 1  # once for the episode, not per request
    assert len(lines(caplog, "can be written again")) == 1


async def test_noting_a_tokens_use_does_not_wait_for_the_lock(db: Database) -> None:
    """Bookkeeping that may be skipped (``wait=False``) is refused at once under the lock
    instead of making its request wait the lock's timeout before its real work waits again
    (a declaration took 8 s so)."""
    ran: list[str] = []
    with held_by_another_process(db.path):
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            await db.transact(lambda tx: ran.append("noted"), wait=False)
        assert time.monotonic() - started < WAIT / 2
    assert refused.value.code == "database_busy" and ran == []
    await db.transact(lambda tx: ran.append("noted"), wait=False)
    assert ran == ["noted"]


async def test_signing_in_while_locked_shows_a_503_page_not_the_500_page(web: Web) -> None:
    """A person signing in while the database is locked (the session is a write) reads a
    503 page saying so, with Retry-After; not the 500 page."""
    await web.add_login_user("duty-wang")
    form = await web.client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', await form.text())
    assert csrf is not None
    with held_by_another_process(web.db.path):
        resp = await web.client.post(
            "/login",
            data={"username": "duty-wang", "password": PASSWORD, "csrf": csrf.group(1)},
            allow_redirects=False,
        )
        page = await resp.text()
    assert resp.status == 503, page[:300]
    assert resp.headers["Retry-After"] == str(RETRY_AFTER)
    assert "正被其他程序锁定" in page  # one language a page: Chinese by default


# -- finding 4: a full disk, a read-only database -------------------------------------------


def limit_growth(tx: sqlite3.Connection) -> None:
    """The disk is full: the database file may not grow by a single page."""
    pages = tx.execute("PRAGMA page_count").fetchone()[0]
    tx.execute(f"PRAGMA max_page_count = {pages}")


def allow_growth(tx: sqlite3.Connection) -> None:
    """Space is freed."""
    tx.execute("PRAGMA max_page_count = 4294967294")


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Lines logged with a traceback by the request handling or the engine's loops."""
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.exc_info and r.name in ("responder.web", "responder.scheduler", "responder.dispatcher")
    ]


async def test_a_full_disk_is_a_503_storage_unavailable_and_healthz_says_so(
    web: Web, dump_tables: Dump, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk fills up under use: the first declaration that needs the database to grow, and
    every one after it, is answered 503 ``storage_unavailable`` with Retry-After, leaving
    nothing behind; ``/healthz`` answers 503 saying the disk is full.  Space freed, the next
    declaration goes through and health is green.  One log line each way, no traceback."""
    caplog.set_level(logging.INFO, "responder.store")
    await web.get(INCIDENTS)  # the token's use is noted before the disk fills
    await web.db.transact(limit_growth)
    for _ in range(300):  # the pages not yet full take a few more, then none
        resp = await web.post(INCIDENTS, web.declaration())
        if resp.status != 201:
            break
    data = await refused_with(resp, "storage_unavailable")
    assert "磁盘已满" in data["message"] and "its disk is full" in data["message_en"]
    before = await dump_tables(web.db)
    for _ in range(10):
        await refused_with(await web.post(INCIDENTS, web.declaration()), "storage_unavailable")
    assert await dump_tables(web.db) == before  # nothing half-written
    assert await health_problems(web) == [
        "the database cannot be written: its disk is full; changes are refused and alerts wait"
    ]
    body = await (await web.get("/healthz")).json()
    assert body["problems_zh"][0].startswith("数据库无法写入:数据库所在磁盘已满")

    await web.db.transact(allow_growth)
    await web.declare()
    assert await health_problems(web) == []
    assert len(lines(caplog, "cannot be written")) == 1
    assert len(lines(caplog, "can be written again")) == 1
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("run_engine", [True])
async def test_a_read_only_database_pauses_the_engine_and_it_resumes_by_itself(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    """An alert falls due while the database is read-only: the scheduler cannot record firing
    it, so it waits — one log line, no traceback every round — and ``/healthz`` says why.
    Writable again, the scheduler finds it out by itself at its next try (no request, no
    restart): the alert fires and its messages go out."""
    caplog.set_level(logging.INFO, "responder.store")
    engine = web.app[ENGINE]
    await web.declare()  # level II, occurred an hour ago: its release is due in 4 h
    await settle(engine, limit=20)  # the messages of the declaration are out
    await web.db.transact(lambda tx: tx.execute("PRAGMA query_only = ON"))

    web.clock.advance(timedelta(hours=2))  # the "2 h before the deadline" alerts fall due
    engine.scheduler.wake()
    engine.dispatcher.wake()  # as a send finishing would: its claim cannot be recorded either
    await quiet(web.clock)
    now = (to_db(web.clock.now()),)
    assert await web.count("steps", "status = 'pending' AND due_at <= ?", now) > 0  # waiting
    assert await health_problems(web) == [
        "the database cannot be written: it is read-only; changes are refused and alerts wait"
    ]
    await refused_with(await web.post(INCIDENTS, web.declaration()), "storage_unavailable")
    web.clock.advance(STORAGE_RETRY)  # it tries again, and again finds it read-only
    await quiet(web.clock)
    assert len(lines(caplog, "cannot be written")) == 1
    assert tracebacks(caplog) == []

    # Writable again (the writer connection is the only one that can lift query_only: a
    # transaction cannot even begin under it).
    await web.db._on_writer(web.db._writer.execute, "PRAGMA query_only = OFF")  # type: ignore[union-attr]
    web.clock.advance(STORAGE_RETRY)
    await settle(engine, limit=20)  # fired, and its messages sent, without being woken
    assert await health_problems(web) == []
    assert len(lines(caplog, "can be written again")) == 1
    assert tracebacks(caplog) == []
