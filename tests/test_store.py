"""The store: a row committed is seen by the very next read; jobs that queue up share one
COMMIT, yet each commits or rolls back whole and hears of its own outcome only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from responder.errors import ResponderError, Unavailable
from responder.store import Database
from responder.store.db import WriteState


async def test_a_committed_row_is_seen_by_the_next_read_under_concurrent_reads(
    db: Database,
) -> None:
    """A read that leaves its statement open between awaits pins an old snapshot on the
    shared reader connection; an incident just declared then answered 404 under load."""

    def job(tx: sqlite3.Connection) -> Any:
        tx.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?)", [(f"c{i}", i) for i in range(500)]
        )

    await db.transact(job)

    async def busy_reader() -> None:
        for _ in range(20):
            await db.fetchone("SELECT name FROM counters ORDER BY name")  # many rows, first one
            await db.scan("SELECT name FROM counters ORDER BY name LIMIT 1")

    async def write_then_read(i: int) -> bool:
        def job(tx: sqlite3.Connection) -> Any:
            tx.execute("INSERT INTO counters (name, value) VALUES (?, ?)", (f"new{i}", i))

        await db.transact(job)
        sql, params = "SELECT value FROM counters WHERE name = ?", (f"new{i}",)
        return await db.fetchone(sql, params) is not None and len(await db.scan(sql, params)) == 1

    for round_ in range(10):
        results = await asyncio.gather(
            busy_reader(), busy_reader(), *(write_then_read(round_ * 10 + i) for i in range(10))
        )
        assert all(results[2:]), f"a committed row was not visible in round {round_}"


async def test_a_quick_read_cannot_write(db: Database) -> None:
    """Reads run on the event loop's own connection; a change must go through the writer."""
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await db.fetchall("INSERT INTO counters (name, value) VALUES ('x', 1)")
    assert await db.fetchall("SELECT * FROM counters WHERE name = 'x'") == []


async def test_a_long_scan_leaves_the_event_loop_free(db: Database) -> None:
    """A read whose size grows with the data runs on the reader thread: requests and the
    engine go on while it runs (a quick read would hold the loop for all of it)."""
    turns = 0
    done = False

    async def other_work() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    worker = asyncio.ensure_future(other_work())
    await asyncio.sleep(0)
    started = turns
    (row,) = await db.scan(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)"
        " SELECT COUNT(*) FROM n"
    )
    done = True
    await worker
    assert row[0] == 300000
    assert turns - started > 10  # the loop kept turning while the scan ran


# -- group commit ------------------------------------------------------------------------


def _insert(name: str) -> Callable[[sqlite3.Connection], str]:
    def job(tx: sqlite3.Connection) -> str:
        tx.execute("INSERT INTO counters (name, value) VALUES (?, 1)", (name,))
        return name

    return job


async def _names(db: Database) -> list[str]:
    return [r[0] for r in await db.fetchall("SELECT name FROM counters ORDER BY name")]


@contextlib.asynccontextmanager
async def writer_held(db: Database) -> AsyncIterator[None]:
    """Keep the writer thread busy for the block: the jobs queued meanwhile form one batch."""
    release, started = threading.Event(), threading.Event()

    def hold(tx: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    holding = asyncio.ensure_future(db.transact(hold))
    await asyncio.to_thread(started.wait, 10)
    try:
        yield
    finally:
        release.set()
        await holding


async def _queued_together(db: Database, *jobs: Callable[[sqlite3.Connection], Any]) -> list[Any]:
    """Run ``jobs`` as ONE batch and return each one's result or exception."""
    async with writer_held(db):
        calls = [asyncio.ensure_future(db.transact(job)) for job in jobs]
        await asyncio.sleep(0)  # every call has queued its job
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_jobs_queued_together_share_one_commit_and_each_gets_its_result(
    db: Database,
) -> None:
    commits_before = db.commits
    results = await _queued_together(db, _insert("a"), _insert("b"), _insert("c"))
    assert results == ["a", "b", "c"]
    assert await _names(db) == ["a", "b", "c"]
    # the holding job's batch, then one for the three
    assert db.commits - commits_before == 2


class PausedWhileCounting(WriteState):
    """The write state of a real database, whose writer thread, where it counts commit number
    ``pause_at``, waits until the test has looked: the moment at which a caller told "done" too
    early would read a count without its own commit is held open instead of left to timing."""

    def __init__(self, path: str, pause_at: int) -> None:
        super().__init__(path)
        self.pause_at = pause_at
        self.counting = asyncio.Event()  # set on the caller's loop
        self.looked = threading.Event()
        self.loop = asyncio.get_running_loop()

    def wrote(self, changed: bool) -> None:
        if self.commits + 1 == self.pause_at:
            # Queued behind anything already handed to the loop: a caller's "done" included.
            self.loop.call_soon_threadsafe(self.counting.set)
            self.looked.wait(10)
        super().wrote(changed)


async def test_a_caller_told_done_finds_its_commit_counted(tmp_path: Path) -> None:
    """The count of commits was raised after the callers were told: a test reading it right
    after its jobs ended once found one commit too few ("assert (1 - 0) == 2"), 2 runs in 300
    (measured).  The writer now counts, then tells."""
    path = str(tmp_path / "paused.sqlite3")
    db = Database(path)
    db.writes = paused = PausedWhileCounting(path, pause_at=2)
    await db.open()
    try:
        async with writer_held(db):  # commit 1: the holding job's batch
            calls = [asyncio.ensure_future(db.transact(_insert(n))) for n in "abc"]
            await asyncio.sleep(0)
        await paused.counting.wait()  # the writer is adding commit 2, the three jobs' batch
        told_before_counted = [call.done() for call in calls]
        paused.looked.set()
        assert await asyncio.gather(*calls) == ["a", "b", "c"]
        assert told_before_counted == [False, False, False]
        assert db.commits == 2
    finally:
        paused.looked.set()
        await db.close()


async def test_a_failing_job_in_a_batch_leaves_nothing_and_the_others_commit(
    db: Database,
) -> None:
    def half_then_fail(tx: sqlite3.Connection) -> None:
        tx.execute("INSERT INTO counters (name, value) VALUES ('half', 1)")
        raise ValueError("refused")

    results = await _queued_together(db, _insert("a"), half_then_fail, _insert("c"))
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], ValueError) and str(results[1]) == "refused"
    assert await _names(db) == ["a", "c"]


async def test_a_constraint_error_in_a_batch_is_that_jobs_alone(db: Database) -> None:
    await db.transact(_insert("x"))
    results = await _queued_together(db, _insert("a"), _insert("x"), _insert("c"))
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert await _names(db) == ["a", "c", "x"]


async def test_when_the_whole_transaction_is_lost_no_job_of_it_is_reported_done(
    db: Database,
) -> None:
    """SQLite rolls back the whole transaction on some errors (I/O error, disk full).  The jobs
    that ran before in the same transaction are lost with it: their callers must hear so,
    never "done".  A job ending the transaction itself stands in for such an error here."""

    def transaction_lost(tx: sqlite3.Connection) -> None:
        tx.execute("ROLLBACK")
        raise sqlite3.OperationalError("disk I/O error")

    results = await _queued_together(db, _insert("a"), transaction_lost, _insert("c"))
    assert isinstance(results[0], sqlite3.OperationalError)
    assert isinstance(results[1], sqlite3.OperationalError)
    assert results[2] == "c"  # queued after the loss: a new transaction
    assert await _names(db) == ["c"]
    assert await db.transact(_insert("d")) == "d"  # the writer goes on


async def test_a_failed_begin_fails_the_batch_and_runs_none_of_it(db: Database) -> None:
    """Another process holding the write lock past busy_timeout: every job is refused with
    ``database_busy`` (503 in the API) and none of them ran."""
    ran: list[str] = []

    def job(name: str) -> Callable[[sqlite3.Connection], None]:
        return lambda tx: ran.append(name)

    other = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
    try:
        await db.transact(lambda tx: tx.execute("PRAGMA busy_timeout = 50"))
        other.execute("BEGIN IMMEDIATE")
        results = await asyncio.gather(
            db.transact(job("a")), db.transact(job("b")), return_exceptions=True
        )
        assert all(isinstance(r, Unavailable) for r in results), results
        assert {r.code for r in results} == {"database_busy"}  # type: ignore[union-attr]
        assert ran == []
        other.execute("ROLLBACK")
        await db.transact(job("c"))
        assert ran == ["c"]
    finally:
        other.close()


async def test_a_cancelled_caller_does_not_undo_its_job(db: Database) -> None:
    async with writer_held(db):
        call = asyncio.ensure_future(db.transact(_insert("kept")))
        await asyncio.sleep(0)
        call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await db.transact(lambda tx: None)  # the job queued before this one has run
    assert await _names(db) == ["kept"]


# -- opening -----------------------------------------------------------------------------


async def test_a_database_from_a_newer_version_is_refused_before_anything_runs(
    db: Database, tmp_path: Path
) -> None:
    """This version would read a newer schema as its own and write into it.  It refuses with
    both versions named, changes nothing, and leaves no writer thread behind."""
    known = (await db.fetchone("PRAGMA user_version"))[0]  # type: ignore[index]
    newer = tmp_path / "newer.sqlite3"
    with contextlib.closing(sqlite3.connect(newer)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")  # as every responder database is
        conn.execute("CREATE TABLE from_the_future (x)")
        conn.execute(f"PRAGMA user_version = {known + 1}")
    before = newer.read_bytes()
    writers = _writer_threads()
    with pytest.raises(ResponderError) as refused:
        await Database(str(newer)).open()
    assert refused.value.code == "database_too_new"
    assert f"its schema version {known + 1}, this one knows up to {known}" in refused.value.en
    assert f"其结构版本为 {known + 1},本版本只认识到 {known}" in refused.value.zh
    assert newer.read_bytes() == before
    assert _writer_threads() == writers


def _writer_threads() -> int:
    return sum(t.name.startswith("db-writer") for t in threading.enumerate())


async def test_a_database_created_by_opening_it_is_one_warning_naming_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A mistyped --db used to start the service on a new, empty database without a word (its
    users gone, every token refused).  The first start still creates it, and says so once."""
    path = tmp_path / "typo" / "responder.sqlite3"
    with caplog.at_level(logging.WARNING, logger="responder.store"):
        async with Database(str(path)):
            pass
        async with Database(str(path)):  # it exists now: nothing to say
            pass
    assert path.exists()
    [record] = [r for r in caplog.records if r.name == "responder.store"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"数据库 {path} 不存在,已新建空数据库;如应已有数据,请检查路径(--db、$RESPONDER_DB"
        f" 或 service.database) / the database {path} did not exist: created a new, empty one;"
        " if it should hold data, check the path (--db, $RESPONDER_DB or service.database)"
    )
