"""Connections, migrations and the one-writer transaction.

* WAL, so readers never wait for the writer.
* One writer: every change is a *job* — a plain function of a ``sqlite3.Connection`` — run by
  ``await db.transact(job)`` on the one writer thread, between ``BEGIN IMMEDIATE`` and
  ``COMMIT``.  A change either commits whole or leaves nothing behind (any exception rolls it
  back and reaches the caller).  Another process waits on ``busy_timeout``.
* Why a job and not an ``async with`` block: the write lock is then held only while SQLite
  works.  A transaction written as a series of awaits holds it across every trip back to the
  event loop; under load a declaration queued for ~0.5 s behind the scheduler's transactions.
* ``synchronous=FULL``: a committed timer or message survives a power cut, not only a kill -9.
* Reads go through aiosqlite's reader connection, one job per query (:meth:`Database.fetchall`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

BUSY_TIMEOUT_MS = 5000
T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]


def _migrations() -> list[tuple[int, str]]:
    out = []
    for entry in resources.files("responder.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(out)


_PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
)


async def _connect_reader(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in _PRAGMAS:
        await conn.execute(pragma)
    return conn


def _connect_writer(path: str) -> sqlite3.Connection:
    """Runs on the writer thread, which is the only thread that ever uses this connection."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    return conn


def _in_transaction(conn: sqlite3.Connection, job: Job[T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = job(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class Database:
    """One writer thread with its connection, and an aiosqlite reader connection."""

    def __init__(self, path: str) -> None:
        if path == ":memory:":
            raise ValueError("the database must be a file: the writer and readers share it")
        self.path = path
        self._thread: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None

    async def open(self) -> Database:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-writer")
        self._writer = await self._on_writer(_connect_writer, self.path)
        await self._on_writer(_migrate, self._writer)
        self._reader = await _connect_reader(self.path)
        return self

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        if self._writer is not None:
            await self._on_writer(self._writer.close)
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        self._reader = self._writer = self._thread = None

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._thread is not None, "database not open"
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def transact(self, job: Job[T]) -> T:
        """Run ``job(conn)`` as one write transaction on the writer thread; return its result.

        Jobs run one at a time, in the order they were submitted.  A job is plain synchronous
        code: it must not touch the event loop (wake tasks, await) — do that after it returns.
        If the awaiting task is cancelled the job still runs to its end and commits or rolls
        back whole: it is never left half-done.
        """
        assert self._writer is not None, "database not open"
        return await self._on_writer(_in_transaction, self._writer, job)

    @property
    def reader(self) -> aiosqlite.Connection:
        """The read connection, for code that iterates a cursor (audit verification)."""
        assert self._reader is not None, "database not open"
        return self._reader

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Run a query and fetch every row in ONE job on the database thread.

        A cursor left open between awaits keeps its statement active, and with it a read
        snapshot on the shared reader connection: a concurrent request would then not see a
        row committed a moment ago (an incident just declared answering 404).
        """
        assert self._reader is not None, "database not open"
        return list(await self._reader.execute_fetchall(sql, tuple(params)))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


def _migrate(conn: sqlite3.Connection) -> None:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for version, sql in _migrations():
        if version <= current:
            continue

        def apply(tx: sqlite3.Connection, sql: str = sql, version: int = version) -> None:
            for statement in _split(sql):
                tx.execute(statement)
            tx.execute(f"PRAGMA user_version = {version}")

        _in_transaction(conn, apply)


def _split(script: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement knows about triggers)."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--") and not buf.strip():
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
