"""The PostgreSQL store: the same jobs and reads as on SQLite, for several replicas.

Chosen by ``service.database = "postgresql://…"``.  Why psycopg 3 (not asyncpg): every change
in this service is a *job*, a plain synchronous function of a connection, run by the one
writer thread (see :mod:`.db`).  psycopg 3 has synchronous connections speaking the DB-API
that those jobs already speak, so the jobs run unchanged on both stores; asyncpg would have
every job rewritten as a coroutine, twice the code for two dialects.  Its binary package
brings its own libpq: nothing to install on the host.

How replicas stay correct (the ideas, each in one place):

1. **One writer at a time, cluster-wide.**  Every write transaction first takes one
   transaction-level advisory lock (:data:`WRITE_LOCK`) — PostgreSQL's counterpart of SQLite's
   ``BEGIN IMMEDIATE``.  So a job sees the database exactly as it would on SQLite: nothing
   changes between its reads and its writes, on any replica.  The audit chain stays one chain
   (each append reads the head another replica just wrote), a step fires once, a counter never
   hands out a number twice.  What it costs is measured in docs/performance.md: the slow part,
   sending, happens outside any transaction and is what the replicas share.
2. **Leases.**  A notification claimed by a replica carries ``lease_until``; a replica that
   dies holding claims loses them when the lease runs out, and another sends them
   (:meth:`responder.engine.dispatcher.Dispatcher.recover`).
3. **Nothing waits forever on a lost server.**  Connections time out on connect, keep TCP
   alive (a partition is noticed in ~25 s), bound statements and locks, and are opened again
   on the next use; while the server cannot be reached, writes are refused with 503 (as on
   SQLite with a full disk) and the engine retries.

The SQL the jobs write is SQLite's.  :mod:`.pg_connection` turns it into PostgreSQL's once
per statement text (placeholders, ``INSERT OR IGNORE``, the id an INSERT made); the few
SQLite functions the queries use (``json_extract``, ``json_each``, ``strftime``,
``julianday``) are defined in the PostgreSQL schema (migrations/postgresql).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pgerr

from responder.errors import ResponderError, Unavailable
from responder.store import db as sqlite_store
from responder.store.db import RETRY_AFTER, WriterQueue, _Pending
from responder.store.pg_connection import Connection

log = logging.getLogger("responder.store")

MIGRATE_LOCK = 0x7265_736D  # replicas starting together migrate one after the other
READERS = 2  # read connections (threads): a long report does not hold up a quick read


def is_url(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def masked(url: str) -> str:
    """The URL without its password: what logs and messages may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# -- faults ------------------------------------------------------------------------------------


# A lost connection (refused, cut, the server shutting down): answered 503 like the others.
LOST = ("storage_unavailable", "the database server cannot be reached", "无法连接数据库服务器")


def storage_fault(e: BaseException, writing: bool = True) -> tuple[str, str, str] | None:
    """``(code, why in English, why in Chinese)`` when ``e`` is the server refusing or gone."""
    if isinstance(e, pgerr.LockNotAvailable | pgerr.QueryCanceled):
        return "database_busy", "another replica holds it locked", "正被其他副本锁定"
    if isinstance(e, pgerr.ReadOnlySqlTransaction):
        return "storage_unavailable", "it is read-only (a standby?)", "数据库为只读(可能是备库)"
    if isinstance(e, pgerr.DiskFull | pgerr.InsufficientResources):
        return "storage_unavailable", "its disk is full", "数据库所在磁盘已满"
    if isinstance(e, psycopg.OperationalError):  # connection refused, lost, server shutting down
        return LOST
    return None


def refusal(e: BaseException) -> Unavailable | None:
    fault = storage_fault(e)
    if fault is None:
        return None
    code, en, zh = fault
    return Unavailable(
        code,
        f"数据库暂时无法写入({zh}),本次操作未执行(未作任何更改)。请稍后重试,并请管理员处理",
        f"the database cannot be written now ({en}): nothing was changed; try again later,"
        " and tell the administrator",
        RETRY_AFTER,
    )


def unavailable(url: str, e: BaseException) -> ResponderError:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ResponderError(
        "database_unavailable",
        f"无法连接数据库 {masked(url)}:{reason}。请检查地址、用户名和密码,以及数据库服务器是否运行",
        f"cannot connect to the database {masked(url)}: {reason}; check the address, the user"
        " and password, and that the database server is running",
    )


# -- migrations --------------------------------------------------------------------------------


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("responder.store").joinpath("migrations", "postgresql")
    out = [
        (int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(out)


def _migrate(conn: Connection, url: str) -> None:
    """Bring the schema up to this version's newest migration; refuse a newer schema.  Under
    an advisory lock: replicas started together migrate one after the other."""
    raw = conn.connect()
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        raw.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = raw.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0 if row else 0
        migrations = _migrations()
        known = migrations[-1][0]
        if current > known:
            raise sqlite_store.too_new(masked(url), current, known)
        for version, sql in migrations:
            if version > current:
                raw.execute(sql.encode())  # a script: several statements, no parameters
                raw.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))


def schema_version(conn: Connection) -> int:
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


# -- the database -------------------------------------------------------------------------------


class PgDatabase(WriterQueue):
    """The same interface as :class:`~responder.store.db.Database`, on a PostgreSQL server:
    the shared writer queue (group commit, here under the cluster's write lock), and reader
    threads."""

    dialect = "postgresql"
    _driver_error = psycopg.Error

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = masked(url)  # what messages and /healthz may show
        super().__init__(self.path, storage_fault)
        self._readers: ThreadPoolExecutor | None = None
        self._reader_conns: dict[int, Connection] = {}

    def _refusal(self, e: BaseException) -> Unavailable | None:
        return refusal(e)

    async def open(self, migrate: bool = True) -> PgDatabase:
        """Connect, and bring the schema up to date (``migrate=False``: only connect, for
        ``verify-audit``, which never changes a database)."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-writer")
        self._readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="db-reader")
        self._writer = Connection(self.url)
        try:
            if migrate:
                await self._on_writer(_migrate, self._writer, self.url)
            else:
                await self._on_writer(self._writer.connect)
        except psycopg.Error as e:
            await self.close()
            raise unavailable(self.url, e) from e
        except ResponderError:
            await self.close()
            raise
        return self

    def file_state(self) -> sqlite_store.FileState:
        return "same"  # a server, not a file: nothing can be deleted under us

    async def close(self) -> None:
        if self._writer is not None and self._thread is not None:
            await self._on_writer(self._writer.close)
        if self._readers is not None:
            await asyncio.get_running_loop().run_in_executor(self._readers, self._close_readers)
            self._readers.shutdown(wait=True)
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        self._writer = self._thread = self._readers = None

    def _close_readers(self) -> None:
        for conn in self._reader_conns.values():
            conn.close()
        self._reader_conns.clear()

    async def __aenter__(self) -> PgDatabase:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _commit(self, batch: list[_Pending]) -> None:
        """A batch under the cluster's write lock; refused whole if the server cannot be
        reached at all."""
        try:
            self._writer.connect()
        except psycopg.Error as e:
            self.writes.failed(e)
            for item in batch:
                item.error = e
                item.settle()
            return
        commits = self.writes.commits
        sqlite_store._commit_batch(self._writer, batch, self.writes, begin=_begin)
        if self.writes.fault == LOST and self.writes.commits > commits:
            # A commit went through: the server is reachable again, whether or not that
            # transaction changed anything (unlike a full disk, see WriteState.wrote).
            self.writes.recovered()

    @property
    def reader(self) -> Reader:
        """A read connection for the audit verification and the seals' check."""
        assert self._readers is not None, "database not open"
        return Reader(self)

    def _read(self, sql: str, params: Any) -> list[Any]:
        """Reader thread: one statement, fetched whole (a broken connection is reopened)."""
        import threading

        key = threading.get_ident()
        conn = self._reader_conns.get(key)
        if conn is None:
            conn = self._reader_conns[key] = Connection(self.url)
        try:
            return conn.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            # Cut while idle (a restart, a failover): a read changes nothing, so try it once
            # more on a new connection before refusing it.
            conn.close()
            return conn.execute(sql, params).fetchall()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """A read, on a reader thread: a network round trip never blocks the event loop."""
        assert self._readers is not None, "database not open"
        args = params if isinstance(params, dict) else tuple(params)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._readers, self._read, sql, args
            )
        except psycopg.Error as e:
            refused = refusal(e)
            if refused is None:
                raise
            raise refused from e

    scan = fetchall  # every read already runs off the event loop


def _begin(conn: Any, wait: bool) -> None:
    conn.begin(wait)


class Reader:
    """The part of an aiosqlite connection that the audit verification and the seals' check
    use, on the PostgreSQL readers."""

    dialect = "postgresql"
    row_factory: Any = None  # rows are always readable by name

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def execute_fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return await self._db.fetchall(sql, params)

    def execute(self, sql: str, params: Iterable[Any] = ()) -> _Rows:
        return _Rows(self._db, sql, params)


class _Rows:
    """``async with reader.execute(sql) as cur: async for row in cur`` (fetched whole)."""

    def __init__(self, db: PgDatabase, sql: str, params: Iterable[Any]) -> None:
        self._db, self._sql, self._params = db, sql, params
        self._rows: collections.deque[Any] = collections.deque()

    async def __aenter__(self) -> _Rows:
        self._rows.extend(await self._db.fetchall(self._sql, self._params))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._rows.clear()

    def __aiter__(self) -> _Rows:
        return self

    async def __anext__(self) -> Any:
        if not self._rows:
            raise StopAsyncIteration
        return self._rows.popleft()
