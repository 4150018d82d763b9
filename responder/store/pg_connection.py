"""A psycopg connection that runs the jobs' SQLite SQL on PostgreSQL (see :mod:`.pg`).

:func:`translate` turns a statement's text into PostgreSQL's once per text (placeholders,
``INSERT OR IGNORE``, the new row's id); :class:`Row` reads by index or by name as
``sqlite3.Row`` does; :class:`Connection` speaks the part of ``sqlite3.Connection`` the jobs
use, opens itself again after a cut, and takes the cluster's write lock at BEGIN.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg import errors as pgerr
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus

from responder.errors import BadInput
from responder.store import db as sqlite_store

WRITE_LOCK = 0x7265_7370  # 'resp': the cluster's one write lock (pg_advisory_xact_lock)
BUSY_TIMEOUT_MS = sqlite_store.BUSY_TIMEOUT_MS  # waiting for the write lock, as on SQLite
STATEMENT_TIMEOUT_MS = 60_000
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
