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

The SQL the jobs write is SQLite's.  :func:`translate` turns it into PostgreSQL's once per
statement text (placeholders, ``INSERT OR IGNORE``, the id an INSERT made); the few SQLite
functions the queries use (``json_extract``, ``json_each``, ``strftime``, ``julianday``) are
defined in the PostgreSQL schema (migrations/postgresql).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pgerr
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus

from responder.errors import BadInput, ResponderError, Unavailable
from responder.store import db as sqlite_store
from responder.store.db import RETRY_AFTER, WriteState, _Pending

log = logging.getLogger("responder.store")
T = TypeVar("T")

WRITE_LOCK = 0x7265_7370  # 'resp': the cluster's one write lock (pg_advisory_xact_lock)
MIGRATE_LOCK = 0x7265_736D  # replicas starting together migrate one after the other
BUSY_TIMEOUT_MS = sqlite_store.BUSY_TIMEOUT_MS  # waiting for the write lock, as on SQLite
STATEMENT_TIMEOUT_MS = 60_000
READERS = 2  # read connections (threads): a long report does not hold up a quick read
# Tables whose rows have an ``id`` made by the database: an INSERT into one returns it.
_ID_TABLES = frozenset(
    {
        "level_changes", "obligations", "steps", "releases", "press_conferences",
        "notifications", "attempts", "accountability_records", "users", "tokens",
        "accountability_decisions", "accountability_interviews", "accountability_corrections",
    }
)  # fmt: skip
_CONNECT = {
    "autocommit": True,  # BEGIN / SAVEPOINT / COMMIT are written out, as on SQLite
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "application_name": "responder",
    "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c idle_in_transaction_session_timeout=60000"
    " -c timezone=UTC",
}


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


# -- SQLite's SQL, spoken to PostgreSQL ---------------------------------------------------------

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|::|:[A-Za-z_]\w*|\?|%", re.S)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> tuple[str, bool]:
    """``(PostgreSQL text, whether it returns the new row's id)`` for one SQLite statement.

    ``?`` and ``:name`` become psycopg's ``%s`` and ``%(name)s`` (not inside quotes); a literal
    ``%`` is doubled; ``INSERT OR IGNORE`` becomes ``… ON CONFLICT DO NOTHING``; an INSERT into
    a table with a generated id gets ``RETURNING id`` so that ``cursor.lastrowid`` answers."""

    def token(m: re.Match[str]) -> str:
        t = m.group(0)
        if t.startswith(("'", '"')):
            return t.replace("%", "%%")
        if t == "?":
            return "%s"
        if t == "%":
            return "%%"
        if t == "::":
            return t
        return f"%({t[1:]})s"

    out = _TOKEN.sub(token, sql)
    head = out.lstrip()[:40].upper()
    if head.startswith("INSERT OR IGNORE"):
        out = (
            re.sub(r"(?i)INSERT\s+OR\s+IGNORE", "INSERT", out, count=1) + " ON CONFLICT DO NOTHING"
        )
    returns_id = False
    if head.startswith("INSERT") and " RETURNING " not in out.upper():
        table = re.match(r"(?is)\s*INSERT\s+(?:OR\s+IGNORE\s+)?INTO\s+(\w+)", sql)
        if table and table.group(1) in _ID_TABLES:
            out += " RETURNING id"
            returns_id = True
    return out, returns_id


def _param(v: Any) -> Any:
    if isinstance(v, str) and "\x00" in v:
        raise _nul()
    return int(v) if isinstance(v, bool) else v  # SQLite's booleans are integers


def _nul() -> BadInput:
    """PostgreSQL's text cannot hold the NUL character (SQLite's can): refused as bad input,
    before the statement, rather than failing in the driver (a 500)."""
    return BadInput(
        "invalid",
        "内容含有空字符(NUL,\\u0000),无法保存或查找;请删除后重试",
        "the text holds a NUL character (\\u0000), which cannot be stored or looked up:"
        " remove it and try again",
    )


def _params(params: Any) -> Any:
    if isinstance(params, dict):
        return {k: _param(v) for k, v in params.items()}
    return tuple(_param(v) for v in params or ())


class Row(tuple):  # type: ignore[type-arg]
    """A row read by index or by column name, as ``sqlite3.Row`` is."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return super().__getitem__(self._index[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    index = {d.name: i for i, d in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


class _Numeric(Loader):
    """``SUM`` of integers answers a numeric: an int, as SQLite gives."""

    def load(self, data: Any) -> Any:
        text = bytes(data).decode()
        if "." in text:
            return float(text)
        return int(text)


class Cursor:
    """What a job gets back from ``execute``: the part of ``sqlite3.Cursor`` jobs use."""

    def __init__(self, cur: psycopg.Cursor[Any], returns_id: bool) -> None:
        self._cur = cur
        self.rowcount = cur.rowcount
        self.lastrowid: int | None = None
        if returns_id:
            row = cur.fetchone()
            self.lastrowid = row[0] if row else None

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self._cur.description else None

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall() if self._cur.description else []

    def __iter__(self) -> Any:
        return iter(self.fetchall())

    @property
    def description(self) -> Any:
        return self._cur.description


class Connection:
    """A psycopg connection that runs the jobs' SQLite SQL (the writer's, or a reader's).

    ``server_secret`` is carried as on :class:`~responder.store.audit.Writer`."""

    dialect = "postgresql"
    server_secret: bytes | None = None

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self.total_changes = 0

    def connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = psycopg.connect(
                self.url, cursor_factory=psycopg.ClientCursor, row_factory=_row_factory, **_CONNECT
            )
            self._conn.adapters.register_loader("numeric", _Numeric)
        return self._conn

    def execute(self, sql: str, params: Any = ()) -> Cursor:
        text, returns_id = translate(sql)
        cur = self.connect().execute(text, _params(params))
        if cur.rowcount > 0 and text.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            self.total_changes += cur.rowcount
        return Cursor(cur, returns_id)

    def executemany(self, sql: str, seq: Iterable[Any]) -> None:
        text, _ = translate(sql)
        text = text.removesuffix(" RETURNING id")
        with self.connect().cursor() as cur:
            cur.executemany(text, [_params(p) for p in seq])
            self.total_changes += max(cur.rowcount, 0)

    @property
    def in_transaction(self) -> bool:
        if self._conn is None or self._conn.closed:
            return False
        status = self._conn.info.transaction_status
        return status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    def begin(self, wait: bool = True) -> None:
        """Start a write transaction holding the cluster's write lock (see the docstring).
        A connection cut while idle (the server restarted, a failover) is found out here,
        before anything ran: opened again once, at once."""
        try:
            self.execute("BEGIN")
        except psycopg.OperationalError:
            self.close()
            self.execute("BEGIN")
        if wait:
            self.execute(f"SET LOCAL lock_timeout = {BUSY_TIMEOUT_MS}")
            self.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
        elif not self.execute("SELECT pg_try_advisory_xact_lock(?)", (WRITE_LOCK,)).fetchone()[0]:
            raise pgerr.LockNotAvailable("another replica holds the write lock")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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


class PgDatabase:
    """The same interface as :class:`~responder.store.db.Database`, on a PostgreSQL server:
    one writer thread (group commit under the cluster's write lock), reader threads."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = masked(url)  # what messages and /healthz may show
        self._thread: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._writer: Connection | None = None
        self._reader_conns: dict[int, Connection] = {}
        self._pending: collections.deque[_Pending] = collections.deque()
        self.writes = WriteState(self.path, storage_fault)
        self.jobs = 0
        self.busy_seconds = 0.0

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

    def use_secret(self, secret: bytes) -> None:
        assert self._writer is not None, "database not open"
        self._writer.server_secret = secret

    @property
    def server_secret(self) -> bytes | None:
        return self._writer.server_secret if self._writer else None

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

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._thread is not None, "database not open"
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def transact(self, job: Callable[[Any], T], *, wait: bool = True) -> T:
        """As :meth:`Database.transact`: one write transaction, group-committed."""
        assert self._writer is not None and self._thread is not None, "database not open"
        item = _Pending(job, asyncio.get_running_loop(), wait)
        self._pending.append(item)
        self._thread.submit(self._drain)
        try:
            return await item.future
        except psycopg.Error as e:
            refused = refusal(e)
            if refused is None:
                raise
            raise refused from e

    def _drain(self) -> None:
        assert self._writer is not None
        while self._pending:
            started = time.perf_counter()
            batch = []
            while self._pending and len(batch) < sqlite_store.MAX_JOBS_PER_COMMIT:
                batch.append(self._pending.popleft())
            self.jobs += len(batch)
            try:
                self._writer.connect()
            except psycopg.Error as e:  # the server cannot be reached: refuse this batch
                self.writes.failed(e)
                for item in batch:
                    item.error = e
                    item.settle()
                continue
            commits = self.writes.commits
            sqlite_store._commit_batch(self._writer, batch, self.writes, begin=_begin)
            if self.writes.fault == LOST and self.writes.commits > commits:
                # A commit went through: the server is reachable again, whether or not that
                # transaction changed anything (unlike a full disk, see WriteState.wrote).
                self.writes.recovered()
            self.busy_seconds += time.perf_counter() - started

    @property
    def commits(self) -> int:
        return self.writes.commits

    @property
    def write_fault(self) -> tuple[str, str] | None:
        fault = self.writes.fault
        return (fault[1], fault[2]) if fault else None

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

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

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
