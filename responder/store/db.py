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
* Group commit: jobs that queue up while the writer is busy run together in ONE transaction,
  each inside its own SAVEPOINT, and share one COMMIT (one fsync of the WAL).  A job that raises
  is rolled back to its savepoint alone; the others still commit.  No caller hears "done" before
  the COMMIT that made its job durable.  Why: at 200 declarations/s with the engine sending,
  py-spy found the writer thread on its COMMIT line in 48 % of its samples, and a declaration
  waited behind every commit queued ahead of it.  Keeping foreground and engine jobs in
  separate batches (more commits) made declarations twice as slow, so all jobs share batches.
* Reads come in two sizes.  A quick read — a few rows by key or index: one incident, one token,
  the next due time — runs right on the event loop (:meth:`Database.fetchall`): handing it to a
  thread and back costs two thread switches, each waiting for the interpreter lock, which under
  load is more than the read itself.  A read whose size grows with the data — lists, counts,
  metrics, the start page — goes to aiosqlite's reader thread (:meth:`Database.scan`), so that
  the loop keeps answering requests and firing alerts while it runs.
* When the storage refuses (another process holds the lock past the wait, the disk is full,
  the database is read-only or failing), the caller gets :class:`~responder.errors.Unavailable`
  — 503 with Retry-After in the API, never a 500 — and nothing of its job is kept.  Whether
  writes go through is tracked (:attr:`Database.write_fault`, for ``/healthz`` and the engine)
  and logged once per change, not once per request.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from responder.errors import ResponderError, Unavailable
from responder.store.audit import Writer

log = logging.getLogger("responder.store")

# How long a write waits for another process's lock (SQLite's busy_timeout) before it is
# refused with 503 database_busy.  Jobs queued meanwhile are refused with it: each request
# waits about this long at most, not this long for every batch queued ahead of it.
BUSY_TIMEOUT_MS = 5000
RETRY_AFTER = 5  # seconds, said in Retry-After: about what a write waits for a lock
# At most this many jobs share one COMMIT: bounds the time the write lock is held (another
# process waits on busy_timeout) and the work lost with a batch if its COMMIT fails.
MAX_JOBS_PER_COMMIT = 64
T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]
FileState = Literal["same", "gone", "replaced"]


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


def _connect_quick(path: str) -> sqlite3.Connection:
    """The event loop's own read connection (it cannot write)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in (*_PRAGMAS, "PRAGMA query_only = ON"):
        conn.execute(pragma)
    return conn


def _connect_writer(path: str) -> Writer:
    """Runs on the writer thread, which is the only thread that ever uses this connection."""
    conn = sqlite3.connect(path, isolation_level=None, factory=Writer)
    conn.row_factory = sqlite3.Row
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    return conn


# SQLite's primary result codes that mean the storage, not the request or our code, refused:
# why, in English and Chinese.
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_STORAGE_FAULTS = {
    sqlite3.SQLITE_FULL: ("its disk is full", "数据库所在磁盘已满"),
    sqlite3.SQLITE_READONLY: ("it is read-only", "数据库为只读"),
    sqlite3.SQLITE_IOERR: ("its disk fails to read or write (I/O error)", "磁盘读写出错"),
    sqlite3.SQLITE_CANTOPEN: ("its files cannot be opened", "数据库文件无法打开"),
}


def storage_fault(e: BaseException, writing: bool = True) -> tuple[str, str, str] | None:
    """``(code, why in English, why in Chinese)`` when ``e`` is the storage refusing; None for
    anything else (a constraint, a bug).  A read-only error on a read means a read that tried
    to write: a bug, not the storage."""
    code = getattr(e, "sqlite_errorcode", None)
    if not isinstance(e, sqlite3.Error) or not isinstance(code, int):
        return None
    primary = code & 0xFF  # the extended code's low byte
    if primary in _BUSY:
        return "database_busy", "another program holds it locked", "正被其他程序锁定"
    why = _STORAGE_FAULTS.get(primary)
    if why is None or (primary == sqlite3.SQLITE_READONLY and not writing):
        return None
    return "storage_unavailable", *why


def _locked(e: BaseException | None) -> bool:
    fault = storage_fault(e) if e is not None else None
    return fault is not None and fault[0] == "database_busy"


def refusal(e: BaseException, writing: bool = True) -> Unavailable | None:
    """The answer a client gets when the storage refused (503, Retry-After), or None."""
    fault = storage_fault(e, writing)
    if fault is None:
        return None
    code, en, zh = fault
    if code == "database_busy":
        return Unavailable(
            "database_busy",
            "数据库正被其他程序锁定,本次操作未执行(未作任何更改),请稍后重试",
            "another program holds the database locked: nothing was changed; try again shortly",
            RETRY_AFTER,
        )
    return Unavailable(
        "storage_unavailable",
        f"数据库暂时无法写入({zh}),本次操作未执行(未作任何更改)。请稍后重试,并请管理员处理",
        f"the database cannot be written now ({en}): nothing was changed; try again later,"
        " and tell the administrator",
        RETRY_AFTER,
    )


class WriteState:
    """Whether the database takes writes, as the last write found: read by ``/healthz`` and
    the engine on the loop, changed on the writer thread.  Logged once per change: a full disk
    under load is one warning, not a traceback per request."""

    def __init__(
        self,
        path: str,
        classify: Callable[[BaseException], tuple[str, str, str] | None] | None = None,
    ) -> None:
        self.path = path
        self.classify = classify or storage_fault  # the store's own: SQLite's, PostgreSQL's
        self.fault: tuple[str, str, str] | None = None  # classify() of the last failure
        # Counted before the callers hear of their jobs, so a caller sees its own commit.
        self.commits = 0

    def failed(self, error: BaseException) -> None:
        fault = self.classify(error)
        if fault is None:
            return
        if fault != self.fault:
            log.warning(
                "数据库 %s 无法写入:%s(%s);更改将以 503 拒绝,提醒暂停,恢复后自动继续"
                " / the database %s cannot be written: %s (%s); changes are refused with 503"
                " and alerts wait until it can",
                self.path, fault[2], error, self.path, fault[1], error,
            )  # fmt: skip
        self.fault = fault

    def wrote(self, changed: bool) -> None:
        """A transaction committed; ``changed``: it changed rows.  Only that proves a full or
        read-only database writable again (a transaction that changes nothing writes nothing);
        for a lock, getting it is proof enough."""
        self.commits += 1
        if self.fault is None or (not changed and self.fault[0] != "database_busy"):
            return
        self.recovered()

    def recovered(self) -> None:
        """Writes go through again: said once, in the log."""
        log.info(
            "数据库 %s 恢复可写,提醒继续 / the database %s can be written again; alerts resume",
            self.path,
            self.path,
        )
        self.fault = None


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


class _Pending:
    """A job waiting for the writer, and where its outcome goes (the caller's event loop)."""

    __slots__ = ("error", "future", "job", "loop", "result", "wait")

    def __init__(self, job: Job[Any], loop: asyncio.AbstractEventLoop, wait: bool = True) -> None:
        self.job = job
        self.loop = loop
        self.wait = wait  # for another process's lock (busy_timeout), or refused at once
        self.future: asyncio.Future[Any] = loop.create_future()
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self) -> None:
        """Hand the outcome to the caller's loop (called on the writer thread)."""
        try:
            self.loop.call_soon_threadsafe(self._settle)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass

    def _settle(self) -> None:
        if self.future.done():  # the caller was cancelled; the job ran (or not) all the same
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)


def _commit_batch(
    conn: Any,
    batch: list[_Pending],
    state: WriteState,
    begin: Callable[[Any, bool], None] | None = None,
) -> None:
    """Run a batch of jobs in one transaction, then settle each of them (writer thread).

    1. BEGIN IMMEDIATE.  If that fails (another process held the lock past busy_timeout), every
       job of the batch fails with that error: none of them ran.
    2. Each job, in order, inside ``SAVEPOINT job``: on success RELEASE it; if the job raises,
       ROLLBACK TO it, so that job leaves nothing and the others are untouched.  Should SQLite
       have rolled back the whole transaction itself (an I/O error, a full disk), the jobs run so
       far are lost with it: they fail with that error, and the rest start a new transaction.
    3. COMMIT.  If it fails, every job of the transaction fails with that error.
    4. Only then settle the callers: nobody hears "done" before the change is durable (nor
       before ``state`` has counted its COMMIT).

    ``state`` hears (and counts) each COMMIT, and hears each refusal by the storage.
    ``begin`` starts the transaction: SQLite's BEGIN IMMEDIATE by default; PostgreSQL's
    takes the cluster's write lock (:mod:`.pg`).  Connection: sqlite3's, or the PostgreSQL
    store's, which speaks the same.
    """
    todo = collections.deque(batch)
    try:
        while todo:
            _commit_some(conn, todo, state, begin or _begin)
    finally:
        for item in todo:  # left over only if the writer itself is stopping
            item.error = RuntimeError("the database writer stopped before this change")
        for item in batch:
            item.settle()


def _commit_some(
    conn: Any,
    todo: collections.deque[_Pending],
    state: WriteState,
    begin: Callable[[Any, bool], None],
) -> bool:
    """One transaction over the jobs at the front of ``todo`` (removed as they are taken).
    Whether it committed."""
    group: list[_Pending] = []
    changed = False
    try:
        begin(conn, any(item.wait for item in todo))
        while todo:
            item = todo[0]
            conn.execute("SAVEPOINT job")
            group.append(todo.popleft())
            before = conn.total_changes
            try:
                item.result = item.job(conn)
            except Exception as exc:  # this job's caller gets it; the other jobs go on
                item.error = exc
                state.failed(exc)
                if not conn.in_transaction:  # SQLite rolled back everything (disk full…)
                    for earlier in group:
                        earlier.error = exc
                    return False
                conn.execute("ROLLBACK TO job")
            else:
                changed = changed or conn.total_changes > before
            conn.execute("RELEASE job")
        conn.execute("COMMIT")
        state.wrote(changed)
        return True
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        state.failed(exc)
        error = exc if isinstance(exc, Exception) else RuntimeError("the database writer stopped")
        for item in group or list(todo):
            item.error = error
        if not group:
            todo.clear()
        if error is not exc:
            raise
        return False


def _begin(conn: sqlite3.Connection, wait: bool) -> None:
    """BEGIN IMMEDIATE; without ``wait``, refused at once if another process holds the lock."""
    if wait:
        conn.execute("BEGIN IMMEDIATE")
        return
    patience = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(patience)}")


def unavailable(path: str, e: BaseException) -> ResponderError:
    """The database cannot be opened (a wrong path, a directory this user may not write, a file
    that is not a database): one line for the administrator instead of a traceback."""
    reason = str(e) or type(e).__name__
    return ResponderError(
        "database_unavailable",
        f"无法打开数据库 {path}:{reason}。请检查路径,以及运行本服务的用户能否写入其所在目录",
        f"cannot open the database {path}: {reason}; check the path, and that the user running"
        " the service may write to its directory",
    )


def _missing_or_empty(path: str) -> bool:
    """Whether opening ``path`` makes a new database: no file, or an empty one (SQLite's empty
    database; one in use always has its first page written, in WAL mode too)."""
    try:
        return os.path.getsize(path) == 0
    except OSError:  # missing (or its directory is): SQLite says why when it tries
        return True


def _identity(st: os.stat_result) -> tuple[int, int]:
    """What tells one file from another at the same path (not its name, not its contents)."""
    return st.st_dev, st.st_ino


def too_new(path: str, found: int, known: int) -> ResponderError:
    """The database's schema is newer than this version knows: one line, and nothing changed."""
    return ResponderError(
        "database_too_new",
        f"数据库 {path} 由更新版本的 responder 写入(其结构版本为 {found},本版本只认识到 {known}),"
        "本版本不得修改它。请使用写入它的新版本 responder",
        f"the database {path} was written by a newer responder (its schema version {found}, this"
        f" one knows up to {known}); this version must not change it: run the newer responder",
    )


def make_parent(path: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise unavailable(path, e) from e


class WriterQueue:
    """What both stores share (SQLite here, PostgreSQL in :mod:`.pg`): the one writer thread,
    its queue of jobs committed together, the state of writes, and the server secret carried on
    the writer's connection.  A store says how a batch is committed (:meth:`_commit`) and
    which of its driver's errors mean the storage refused (``_driver_error``, ``_refusal``)."""

    dialect = "sqlite"
    _driver_error: type[Exception] = sqlite3.Error

    def __init__(
        self, shown: str, classify: Callable[[BaseException], tuple[str, str, str] | None]
    ) -> None:
        self._thread: ThreadPoolExecutor | None = None
        self._writer: Any = None  # the writer thread's connection
        self._pending: collections.deque[_Pending] = collections.deque()
        self.writes = WriteState(shown, classify)
        self.jobs = 0  # write jobs run
        self.busy_seconds = 0.0  # writer thread time spent running jobs and committing

    def _refusal(self, e: BaseException) -> Unavailable | None:
        return refusal(e)

    def _commit(self, batch: list[_Pending]) -> None:
        """Writer thread: commit one batch of jobs and settle each of them."""
        raise NotImplementedError

    def use_secret(self, secret: bytes) -> None:
        """From now on, audit entries this database writes are keyed with the server secret,
        and jobs that queue messages find it on their connection (see :mod:`.audit`).  Given
        by whoever holds the secret (the service's engine; a command that found the key file);
        never stored in the database."""
        assert self._writer is not None, "database not open"
        self._writer.server_secret = secret

    @property
    def server_secret(self) -> bytes | None:
        """The secret given by :meth:`use_secret` (to authenticate keyed entries), if any."""
        return getattr(self._writer, "server_secret", None)

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._thread is not None, "database not open"
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def transact(self, job: Job[T], *, wait: bool = True) -> T:
        """Run ``job(conn)`` as one write transaction on the writer thread; return its result.

        If another process holds the database locked, the job waits for it up to the busy
        timeout, then is refused with :class:`~responder.errors.Unavailable` (so is a full or
        read-only database, or a server that cannot be reached).  ``wait=False`` is for
        bookkeeping that may be skipped (noting a token's use): refused at once rather than
        make its request wait twice.

        Jobs run one at a time, in the order they were submitted; jobs queued together share
        one COMMIT (see the module docstring) but each commits or rolls back whole.  A job is
        plain synchronous code: it must not touch the event loop (wake tasks, await) — do that
        after it returns.  It must not run its own BEGIN, COMMIT or ROLLBACK.  If the awaiting
        task is cancelled the job still runs to its end and commits or rolls back whole: it is
        never left half-done.
        """
        assert self._writer is not None and self._thread is not None, "database not open"
        item = _Pending(job, asyncio.get_running_loop(), wait)
        # deque.append and popleft are atomic: no lock needed between the loop and the writer.
        self._pending.append(item)
        self._thread.submit(self._drain)
        try:
            return await item.future
        except self._driver_error as e:
            refused = self._refusal(e)
            if refused is None:
                raise
            raise refused from e

    def _drain(self) -> None:
        """Writer thread: take every job queued so far (up to a bound) and commit them together.

        One ``_drain`` is submitted per job, so every job is taken by some drain; a drain that
        finds the queue emptied by an earlier one returns at once.
        """
        assert self._writer is not None
        while self._pending:
            started = time.perf_counter()
            batch = []
            while self._pending and len(batch) < MAX_JOBS_PER_COMMIT:
                batch.append(self._pending.popleft())
            self.jobs += len(batch)
            self._commit(batch)
            # The writer's occupancy: near 100 % a declaration waits behind whole batches.
            self.busy_seconds += time.perf_counter() - started

    @property
    def commits(self) -> int:
        """Write transactions committed (jobs share them under load)."""
        return self.writes.commits

    @property
    def write_fault(self) -> tuple[str, str] | None:
        """Why the last write failed, ``(English, 中文)``, until a write goes through again;
        None while writes go through."""
        fault = self.writes.fault
        return (fault[1], fault[2]) if fault else None

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


class Database(WriterQueue):
    """SQLite: one writer thread with its connection, and an aiosqlite reader connection."""

    def __init__(self, path: str) -> None:
        if path == ":memory:":
            raise ValueError("the database must be a file: the writer and readers share it")
        super().__init__(path, storage_fault)
        self.path = path
        self._reader: aiosqlite.Connection | None = None
        self._quick: sqlite3.Connection | None = None  # used on the event loop's thread only
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened

    async def open(self) -> Database:
        make_parent(self.path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-writer")
        try:
            # SQLite creates a missing file: right on the first start, but a mistyped path
            # would otherwise start the service on an empty database without a word.  An
            # empty file is the same (``serve`` makes it, to hold its lock on it, see lock.py).
            created = await self._on_writer(_missing_or_empty, self.path)
            self._writer = await self._on_writer(_connect_writer, self.path)
            self._file = _identity(await self._on_writer(os.stat, self.path))
            await self._on_writer(_migrate, self._writer, self.path)
            self._reader = await _connect_reader(self.path)
            self._quick = _connect_quick(self.path)
        except (OSError, sqlite3.Error) as e:
            await self.close()
            raise unavailable(self.path, e) from e
        except ResponderError:  # refused (a newer database): the writer thread must not linger
            await self.close()
            raise
        if created:
            log.warning(
                "数据库 %s 不存在,已新建空数据库;如应已有数据,请检查路径(--db、$RESPONDER_DB"
                " 或 service.database) / the database %s did not exist: created a new, empty"
                " one; if it should hold data, check the path (--db, $RESPONDER_DB or"
                " service.database)",
                self.path,
                self.path,
            )
        return self

    def file_state(self) -> FileState:
        """Whether the path still names the file this database opened: ``same``, ``gone`` (it
        was deleted or moved) or ``replaced`` (another file is there now).

        Deleted or replaced under the running service, the old file still takes every write
        through the open connections — and nobody opens it again: the writes are lost on the
        next start.  One stat, so ``/healthz`` can ask on every probe.
        """
        assert self._file is not None, "database not open"
        try:
            now = os.stat(self.path)
        except OSError:  # gone, or its directory is: either way not the file we write
            return "gone"
        return "same" if _identity(now) == self._file else "replaced"

    async def close(self) -> None:
        if self._quick is not None:
            self._quick.close()
        if self._reader is not None:
            await self._reader.close()
        if self._writer is not None:
            await self._on_writer(self._writer.close)
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        self._reader = self._writer = self._thread = self._quick = None

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _commit(self, batch: list[_Pending]) -> None:
        _commit_batch(self._writer, batch, self.writes)
        self._refuse_waiting_if_locked(batch)

    def _refuse_waiting_if_locked(self, batch: list[_Pending]) -> None:
        """After a batch waited the whole busy_timeout for another process's lock in vain,
        the jobs that queued up meanwhile are refused with it too, at once.  Otherwise each
        would wait its own busy_timeout in turn behind the others: of six declarations sent
        together under a lock, the last was answered after two timeouts (10 s)."""
        locked = next((item.error for item in batch if _locked(item.error)), None)
        if locked is None or not any(item.wait for item in batch):  # nobody waited for it
            return
        while self._pending:
            item = self._pending.popleft()
            item.error = locked
            item.settle()

    @property
    def reader(self) -> aiosqlite.Connection:
        """The read connection, for code that iterates a cursor (audit verification)."""
        assert self._reader is not None, "database not open"
        return self._reader

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """A quick read: a few rows found by key or index, run here on the event loop.

        Why not on a thread: at 200 declarations a second with the engine sending, the three
        reads of each declaration (its token; the incident and its obligations, answered)
        each waited for two thread switches.  Run here, declare p99 fell in every one of
        eleven interleaved benchmark pairs, e.g. 15.6 against 24.6 ms (2026-11-27).
        A read that may touch many rows belongs in :meth:`scan`: here it would stall every
        request and the engine meanwhile.  In WAL mode a read waits for no writer; it waits
        only while another process recovers the database after a crash, when nothing can be
        written either.
        """
        assert self._quick is not None, "database not open"
        try:
            # Executed and fetched in one step: no statement stays open to pin an old snapshot.
            return self._quick.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as e:
            refused = refusal(e, writing=False)
            if refused is None:
                raise
            raise refused from e

    async def scan(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """A read whose size grows with the data (a list, a count, metrics), on the reader
        thread: the event loop goes on meanwhile.  Run and fetched in ONE job there.

        A cursor left open between awaits keeps its statement active, and with it a read
        snapshot on the shared reader connection: a concurrent request would then not see a
        row committed a moment ago (an incident just declared answering 404).
        """
        assert self._reader is not None, "database not open"
        try:
            return list(await self._reader.execute_fetchall(sql, tuple(params)))
        except sqlite3.Error as e:
            refused = refusal(e, writing=False)
            if refused is None:
                raise
            raise refused from e


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the schema up to this version's newest migration; refuse a newer schema."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    migrations = _migrations()
    known = migrations[-1][0]
    if current > known:
        # Written by a newer responder (an upgrade rolled back): this version's code would
        # misread its tables and could break what the newer one relies on.  Refused before
        # any migration or job runs, so no row is changed.
        raise too_new(path, current, known)
    for version, sql in migrations:
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
