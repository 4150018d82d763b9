"""The audit log: append-only, hash-chained, and keyed with the server secret.

Each entry's hash covers the previous entry's hash and this entry's canonical JSON, so changing,
removing or reordering any entry breaks every hash after it.  Entries are written in the same
transaction as the change they record: no change without its entry, and no entry for a change
that rolled back.  Triggers refuse UPDATE and DELETE; :func:`verify` catches edits made around
them (a tampered file), and reports the triggers themselves missing.

Keyed entries.  A plain SHA-256 chain can be extended, or rewritten whole, by anyone who can
write the file.  So an entry written by a process that holds the server secret (the service;
a command that finds the key file) is *keyed*: its hash is an HMAC-SHA256 under a key derived
from the secret (never stored in the database), over the same bytes.  An entry appended, or a
chain re-hashed, without the secret no longer verifies.

* Where keyed entries begin is written once, in ``audit_keyed`` (migration 007), by the first
  keyed entry; every entry from there on must be keyed.  The entries written before keep
  verifying as they are: the past is never re-hashed.
* The secret reaches :func:`append` on the connection (:class:`Writer`, given it by
  :meth:`Database.use_secret`), because ``append(tx, ...)`` is called from every module that
  changes anything and its signature stays as it is.  A process without the secret may not
  append after keyed entries: it is refused, not written unkeyed (which would read as forged).
* What keying cannot show by itself: the newest entries cut off, or someone removing the mark
  in ``audit_keyed`` and re-hashing every entry as unkeyed.  A head recorded elsewhere shows
  both (``verify-audit --expect N:HASH``); the service records one daily and at every close
  (:mod:`responder.engine.audit_head`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite

from responder.errors import ResponderError
from responder.timeutil import to_db

GENESIS = "0" * 64
KEYED_SCHEMA = 7  # the migration that added audit_keyed
COLUMNS = ("seq", "at", "actor", "action", "subject", "data", "prev_hash", "hash")
# The append-only guards, as the migrations wrote them (whitespace aside).
GUARDS = {
    "audit_log_no_update": "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log"
    " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "audit_log_no_delete": "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log"
    " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
}
KEYED_GUARDS = {
    "audit_keyed_no_update": "CREATE TRIGGER audit_keyed_no_update BEFORE UPDATE ON audit_keyed"
    " BEGIN SELECT RAISE(ABORT, 'audit_keyed is written once'); END",
    "audit_keyed_no_delete": "CREATE TRIGGER audit_keyed_no_delete BEFORE DELETE ON audit_keyed"
    " BEGIN SELECT RAISE(ABORT, 'audit_keyed is written once'); END",
}


class Writer(sqlite3.Connection):
    """The writer's connection (the database's ``factory``): it carries the server secret
    while whoever opened the database has given it one, for :func:`append` and for jobs that
    queue messages (which sign their acknowledgement links with it)."""

    server_secret: bytes | None = None


def secret_of(tx: sqlite3.Connection) -> bytes | None:
    """The server secret the connection carries, if any."""
    return getattr(tx, "server_secret", None)


@functools.lru_cache(maxsize=8)
def _key(secret: bytes) -> bytes:
    """The audit log's own key: derived, so that it signs nothing else the secret signs."""
    return hmac.new(secret, b"responder audit log v1", hashlib.sha256).digest()


def _body(seq: int, at: str, actor: str, action: str, subject: str, data: str) -> str:
    return json.dumps(
        [seq, at, actor, action, subject, data], ensure_ascii=False, separators=(",", ":")
    )


def _digest(
    prev_hash: str, seq: int, at: str, actor: str, action: str, subject: str, data: str
) -> str:
    """An unkeyed entry's hash."""
    body = _body(seq, at, actor, action, subject, data)
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _keyed_digest(
    key: bytes, prev_hash: str, seq: int, at: str, actor: str, action: str, subject: str, data: str
) -> str:
    """A keyed entry's hash: the same bytes, under the audit key."""
    body = _body(seq, at, actor, action, subject, data)
    return hmac.new(key, (prev_hash + body).encode("utf-8"), hashlib.sha256).hexdigest()


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def append(
    tx: sqlite3.Connection,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    data: dict[str, Any] | None = None,
) -> int:
    """Append one entry inside the caller's write transaction; return its sequence number.
    Keyed when the connection carries the server secret (see the module docstring)."""
    last = tx.execute(
        "SELECT seq, hash, (SELECT from_seq FROM audit_keyed) FROM audit_log"
        " ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    seq = (last[0] + 1) if last else 1
    prev = last[1] if last else GENESIS
    keyed_from = last[2] if last else None
    at_s = to_db(at) or ""
    payload = canonical(data or {})
    secret = secret_of(tx)
    if secret is None:
        if keyed_from is not None:
            raise _no_secret(keyed_from)
        digest = _digest(prev, seq, at_s, actor, action, subject, payload)
    else:
        digest = _keyed_digest(_key(secret), prev, seq, at_s, actor, action, subject, payload)
        if keyed_from is None:  # the first keyed entry: from here on, every entry is keyed
            tx.execute("INSERT OR IGNORE INTO audit_keyed (id, from_seq) VALUES (1, ?)", (seq,))
    tx.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, data, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at_s, actor, action, subject, payload, prev, digest),
    )
    return seq


def _no_secret(keyed_from: int) -> ResponderError:
    return ResponderError(
        "secret_unavailable",
        f"审计日志自第 {keyed_from} 条起用服务器密钥签名,本进程没有该密钥,不能记入:请在服务所在"
        "的目录以相同配置运行(密钥文件 service.secret_file,或环境变量 RESPONDER_SECRET)",
        f"the audit log is keyed with the server secret from entry {keyed_from} on, and this"
        " process does not have it: run the command where the service runs, with the same"
        " config (the key file service.secret_file, or RESPONDER_SECRET)",
    )


def head(tx: sqlite3.Connection) -> tuple[int, str] | None:
    """The newest entry's number and hash, as ``verify-audit --expect`` takes them."""
    row = tx.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else None


# -- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    problem: str = ""
    seq: int | None = None
    head: str = ""  # the last entry's hash: record it elsewhere to detect a cut-off tail
    keyed_from: int | None = None  # the first keyed entry, if any
    # Keyed entries were found but no secret was given to check them: nothing was found wrong,
    # and nothing from keyed_from on is proven either.
    unauthenticated: bool = False
    problem_zh: str = ""


class _Damage(Exception):
    """The first thing found wrong, in both languages."""

    def __init__(self, zh: str, en: str, seq: int | None = None) -> None:
        super().__init__(en)
        self.zh, self.en, self.seq = zh, en, seq


async def verify(
    conn: aiosqlite.Connection,
    expect: tuple[int, str] | None = None,
    secret: bytes | None = None,
) -> Verdict:
    """Check the audit log's tables and guards, then walk the chain from the start; report
    the first thing that does not fit — never raise for what a file can hold.

    ``expect`` is a head recorded earlier (its sequence number and hash, as a previous
    verification printed it): that entry must still be there with that hash.  ``secret``
    authenticates keyed entries; without it they are checked for their links only, and the
    verdict says they were not authenticated."""
    guards: list[str] = []
    try:
        keyed_from, guards = await _structure(conn)
        verdict = await _walk(conn, expect, secret, keyed_from)
    except _Damage as d:  # the entry first, then how it could be edited
        zh, en = d.zh + _guards(guards, "zh"), d.en + _guards(guards, "en")
        return Verdict(False, 0, en, d.seq, problem_zh=zh)
    except sqlite3.Error as e:  # a file damaged below the tables (malformed pages)
        return Verdict(
            False, 0, f"the audit log cannot be read: {e}", problem_zh=f"审计日志无法读取:{e}"
        )
    if guards and (verdict.ok or verdict.unauthenticated):
        return Verdict(
            False,
            verdict.entries,
            _guards(guards, "en").removeprefix("; "),
            problem_zh=_guards(guards, "zh").removeprefix(";"),
            keyed_from=verdict.keyed_from,
        )
    return verdict


def _guards(missing: list[str], lang: str) -> str:
    """The append-only guards found missing or changed, as a clause to add to a verdict."""
    if not missing:
        return ""
    names = ", ".join(missing)
    if lang == "zh":
        return f";防篡改触发器 {names} 被删除或改动(条目因此可被修改或删除)"
    return f"; the append-only guard {names} was removed or changed (entries can then be edited)"


async def _structure(conn: aiosqlite.Connection) -> tuple[int | None, list[str]]:
    """The tables the chain needs (else :class:`_Damage`); where keyed entries begin; the
    append-only guards that are missing or not as written."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        return await _structure_pg(conn)
    rows = await conn.execute_fetchall(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('table', 'trigger')"
    )
    tables = {r[1] for r in rows if r[0] == "table"}
    triggers = {r[1]: r[3] for r in rows if r[0] == "trigger"}
    version = (await conn.execute_fetchall("PRAGMA user_version"))[0][0]
    if "audit_log" not in tables:
        if not tables:
            raise _Damage(
                "数据库中没有任何表,不是 responder 的数据库:请检查路径",
                "the database holds no tables: it is not a responder database (check the path)",
            )
        raise _Damage("审计日志表 audit_log 不存在(被删除)", "the audit log table is missing")
    columns = {r[1] for r in await conn.execute_fetchall("PRAGMA table_info(audit_log)")}
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise _Damage(
            f"审计日志表缺少列 {', '.join(missing)}",
            f"the audit log table lacks the column(s) {', '.join(missing)}",
        )
    expected = dict(GUARDS)
    keyed_from = None
    if version >= KEYED_SCHEMA:
        if "audit_keyed" not in tables:
            raise _Damage(
                "记录签名起点的表 audit_keyed 不存在(被删除)",
                "the table audit_keyed, which marks where keyed entries begin, is missing",
            )
        expected.update(KEYED_GUARDS)
        marks = await conn.execute_fetchall("SELECT from_seq FROM audit_keyed")
        if len(marks) > 1 or (marks and not _whole(marks[0][0])):
            raise _Damage(
                "记录签名起点的表 audit_keyed 被改动", "the table audit_keyed was changed"
            )
        keyed_from = marks[0][0] if marks else None
    guards_missing = [
        name
        for name, sql in expected.items()
        if " ".join((triggers.get(name) or "").split()) != sql
    ]
    return keyed_from, guards_missing


# The guards on PostgreSQL (migrations/postgresql), as pg_get_triggerdef prints them.
def _pg_guard(name: str, event: str, table: str, message: str, each: str = "ROW") -> str:
    return (
        f"CREATE TRIGGER {name} BEFORE {event} ON public.{table} FOR EACH {each}"
        f" EXECUTE FUNCTION responder_refuse('{message}')"
    )


PG_GUARDS = {
    "audit_log_no_update": _pg_guard(
        "audit_log_no_update", "UPDATE", "audit_log", "audit_log is append-only"
    ),
    "audit_log_no_delete": _pg_guard(
        "audit_log_no_delete", "DELETE", "audit_log", "audit_log is append-only"
    ),
    "audit_log_no_truncate": _pg_guard(
        "audit_log_no_truncate", "TRUNCATE", "audit_log", "audit_log is append-only", "STATEMENT"
    ),
    "audit_keyed_no_update": _pg_guard(
        "audit_keyed_no_update", "UPDATE", "audit_keyed", "audit_keyed is written once"
    ),
    "audit_keyed_no_delete": _pg_guard(
        "audit_keyed_no_delete", "DELETE", "audit_keyed", "audit_keyed is written once"
    ),
}


async def _structure_pg(conn: Any) -> tuple[int | None, list[str]]:
    """:func:`_structure` on PostgreSQL: the same checks, from its catalogue.  A guard counts
    only while enabled (``ALTER TABLE … DISABLE TRIGGER`` is how one would edit around it)."""
    tables = {
        r[0]
        for r in await conn.execute_fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    }
    if "audit_log" not in tables or "audit_keyed" not in tables:
        raise _Damage("审计日志表 audit_log 不存在(被删除)", "the audit log table is missing")
    columns = {
        r[0]
        for r in await conn.execute_fetchall(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'audit_log'"
        )
    }
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise _Damage(
            f"审计日志表缺少列 {', '.join(missing)}",
            f"the audit log table lacks the column(s) {', '.join(missing)}",
        )
    triggers = {
        r[0]: r[1]
        for r in await conn.execute_fetchall(
            "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t"
            " WHERE NOT t.tgisinternal AND t.tgenabled != 'D'"
        )
    }
    marks = await conn.execute_fetchall("SELECT from_seq FROM audit_keyed")
    if len(marks) > 1 or (marks and not _whole(marks[0][0])):
        raise _Damage("记录签名起点的表 audit_keyed 被改动", "the table audit_keyed was changed")
    keyed_from = marks[0][0] if marks else None
    return keyed_from, [name for name, sql in PG_GUARDS.items() if triggers.get(name) != sql]


def _whole(value: object) -> bool:
    return isinstance(value, int) and value >= 1


async def _walk(
    conn: aiosqlite.Connection,
    expect: tuple[int, str] | None,
    secret: bytes | None,
    keyed_from: int | None,
) -> Verdict:
    key = _key(secret) if secret is not None else None
    prev = GENESIS
    count = 0
    async with conn.execute(
        "SELECT seq, at, actor, action, subject, data, prev_hash, hash FROM audit_log ORDER BY seq"
    ) as cur:
        async for row in cur:
            seq = count + 1
            _check_types(row, seq)
            if row[0] != seq:
                raise _Damage(f"第 {seq} 条缺失", f"entry {seq} is missing", seq)
            _, at, actor, action, subject, data, prev_hash, digest = row
            if prev_hash != prev:
                raise _Damage(
                    f"第 {seq} 条与第 {seq - 1} 条接不上",
                    f"entry {seq} does not follow entry {seq - 1}",
                    seq,
                )
            if keyed_from is None or seq < keyed_from:
                if _digest(prev, seq, at, actor, action, subject, data) != digest:
                    raise _Damage(
                        f"第 {seq} 条在写入后被改动",
                        f"entry {seq} was changed after it was written",
                        seq,
                    )
            elif key is not None:
                if _keyed_digest(key, prev, seq, at, actor, action, subject, data) != digest:
                    raise _keyed_mismatch(seq, keyed_from)
            if expect is not None and seq == expect[0] and digest != expect[1]:
                raise _Damage(
                    f"第 {seq} 条与先前记录的不同(被重写)",
                    f"entry {seq} is not the one recorded earlier (rewritten)",
                    seq,
                )
            prev = digest
            count += 1
    if expect is not None and count < expect[0]:
        raise _Damage(
            f"第 {count + 1} 至 {expect[0]} 条被删除",
            f"entries from {count + 1} to {expect[0]} were removed",
            count + 1,
        )
    if keyed_from is not None and keyed_from > count:  # marked with its first keyed entry
        raise _Damage(
            f"第 {count + 1} 条起的条目被删除(首个签名条目第 {keyed_from} 条已不在)",
            f"the entries from {count + 1} on were removed (the first keyed entry,"
            f" {keyed_from}, is gone)",
            count + 1,
        )
    keyed = keyed_from
    if keyed is not None and key is None:
        return Verdict(
            False,
            count,
            f"entries {keyed} to {count} are keyed with the server secret, which was not"
            f" given: they could not be authenticated (entries before {keyed} are intact)",
            keyed,
            prev,
            keyed,
            unauthenticated=True,
            problem_zh=f"第 {keyed} 至 {count} 条用服务器密钥签名,而未能取得该密钥,无法验证"
            f"(第 {keyed} 条之前的条目完好)",
        )
    return Verdict(True, count, head=prev if count else "", keyed_from=keyed)


def _keyed_mismatch(seq: int, keyed_from: int) -> _Damage:
    if seq == keyed_from:  # the first keyed entry: most likely a secret other than the service's
        return _Damage(
            f"第 {seq} 条(首个签名条目)与所给服务器密钥不符:密钥不是服务所用的那个"
            "(service.secret_file、RESPONDER_SECRET),或该条目被改动",
            f"entry {seq}, the first keyed one, does not match the server secret given: either"
            " the secret is not the one the service uses (service.secret_file,"
            " RESPONDER_SECRET), or the entry was changed",
            seq,
        )
    return _Damage(
        f"第 {seq} 条在写入后被改动,或由没有服务器密钥者写入",
        f"entry {seq} was changed after it was written, or written without the server secret",
        seq,
    )


_TYPES = (int, str, str, str, str, str, str, str)
_SQL_TYPES = {int: "integer", float: "real", str: "text", bytes: "blob", type(None): "NULL"}


def _check_types(row: Any, seq: int) -> None:
    """A value of another type (a blob where text was written) is damage, not a crash."""
    for name, value, kind in zip(COLUMNS, row, _TYPES, strict=True):
        if not isinstance(value, kind):
            found, wanted = _SQL_TYPES.get(type(value), type(value).__name__), _SQL_TYPES[kind]
            raise _Damage(
                f"第 {seq} 条的 {name} 列为 {found},应为 {wanted}:条目被改动",
                f"entry {seq}: {name} holds a {found} value, not {wanted} (tampered)",
                seq,
            )
