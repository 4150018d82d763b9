"""Connections, migrations and the one-writer transaction.

* WAL, so readers never wait for the writer.
* One writer: every change runs in ``async with db.write() as tx`` — an asyncio lock in this
  process plus ``BEGIN IMMEDIATE``, so a second process waits on ``busy_timeout`` instead of
  failing half-way through.  A change either commits whole or leaves nothing behind.
* ``synchronous=FULL``: a committed timer or message survives a power cut, not only a kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

BUSY_TIMEOUT_MS = 5000


def _migrations() -> list[tuple[int, str]]:
    out = []
    for entry in resources.files("responder.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(out)


async def _connect(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = FULL")
    await conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Database:
    """A writer connection behind a lock, and a reader connection for queries."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> Database:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await _connect(self.path)
        await self._migrate()
        self._reader = self._writer if self.path == ":memory:" else await _connect(self.path)
        return self

    async def close(self) -> None:
        for conn in {id(c): c for c in (self._reader, self._writer) if c}.values():
            await conn.close()
        self._reader = self._writer = None

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        assert self._writer is not None
        row = await (await self._writer.execute("PRAGMA user_version")).fetchone()
        current = row[0] if row else 0
        for version, sql in _migrations():
            if version <= current:
                continue
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split(sql):
                    await self._writer.execute(statement)
                await self._writer.execute(f"PRAGMA user_version = {version}")
                await self._writer.execute("COMMIT")
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction.  Commits on success, rolls back on any exception."""
        assert self._writer is not None, "database not open"
        async with self._lock:
            try:
                # Inside the try: a task cancelled while BEGIN runs in aiosqlite's thread must
                # still roll back, or the shared connection stays inside a transaction.
                await self._writer.execute("BEGIN IMMEDIATE")
                yield self._writer
            except BaseException:
                with contextlib.suppress(sqlite3.OperationalError):  # no transaction began
                    await self._writer.execute("ROLLBACK")
                raise
            else:
                await self._writer.execute("COMMIT")

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
