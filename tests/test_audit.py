"""The audit log as an auditor meets it: ``responder verify-audit`` on a real SQLite file that
someone has tampered with, entries keyed with the server secret, and heads the service records
outside the database (to the administrators and the log) daily and at every close.

The command runs in-process (its exit code, stdout and stderr as a person sees them); the
service parts run on the FakeClock with real SMTP and HTTP sinks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from responder import auth
from responder.cli import main
from responder.clock import FakeClock
from responder.config import Config
from responder.engine.audit_head import next_daily
from responder.engine.runner import Engine
from responder.models import CloseIncident, DeclareIncident
from responder.store import audit
from tests.conftest import CONFIG_PATH
from tests.engine_helpers import SECRET, ops_of, quiet, settle
from tests.sinks import SmtpSink

pytest_plugins = ["tests.engine_fixtures"]

GUARD = (
    "CREATE TRIGGER {name} BEFORE {event} ON {table}"
    " BEGIN SELECT RAISE(ABORT, '{table} is {what}'); END"
)
APPEND_ONLY = {"table": "audit_log", "what": "append-only"}
WRITTEN_ONCE = {"table": "audit_keyed", "what": "written once"}


# -- the command ---------------------------------------------------------------------------


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of the test's own, as the service's: var/secret.key is looked for
    there, and nothing else gives a secret."""
    for name in ("RESPONDER_SECRET", "RESPONDER_DB", "RESPONDER_CONFIG", "RESPONDER_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_key(here: Path, secret: bytes = SECRET) -> None:
    """The key file as the service makes it on its first start."""
    (here / "var").mkdir(exist_ok=True)
    (here / "var" / "secret.key").write_text(base64.b64encode(secret).decode() + "\n")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """In English unless ``args`` choose: the verdicts are asserted in audit.verify's English
    half (a run speaks one language; Chinese is the default)."""
    lang = [] if any(a.startswith("--lang") for a in args) else ["--lang", "en"]
    code = main(["--config", str(CONFIG_PATH), *lang, *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("responder: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def cli(here: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``cli("verify-audit", ...)`` on ``here/audit.sqlite3``."""
    db = str(here / "audit.sqlite3")
    return lambda *args: run(capsys, *args, "--db", db)


def add_users(cli: Callable[..., tuple[int, str, str]], *names: str) -> None:
    for name in names:
        code, _, err = cli("user", "add", name, "--role", "viewer", "--no-password")
        assert code == 0, err


@contextlib.contextmanager
def tamper(here: Path) -> Iterator[sqlite3.Connection]:
    """The database file opened as someone with write access to it would."""
    conn = sqlite3.connect(here / "audit.sqlite3", isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def rows(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT seq, at, actor, action, subject, data, prev_hash, hash FROM audit_log ORDER BY seq"
    ).fetchall()


def append_forged(conn: sqlite3.Connection, digest: Callable[..., str]) -> None:
    """Append an entry after the head, its hash computed by ``digest`` (the chain's rule)."""
    seq, *_, head = rows(conn)[-1]
    fields = (seq + 1, "2026-11-26T01:00:00.000000Z", "cli:root", "user.added", "mallory",  # type: ignore[operator]
              '{"role":"admin"}')  # fmt: skip
    conn.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, data, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (*fields, head, digest(head, *fields)),
    )


def rehash_plain(conn: sqlite3.Connection, change: Callable[[tuple[object, ...]], str]) -> None:
    """Rewrite every entry's data with ``change`` and re-hash the chain without the secret,
    the guard remade after: what the chain alone cannot tell from the original."""
    conn.execute("DROP TRIGGER audit_log_no_update")
    prev = audit.GENESIS
    for seq, at, actor, action, subject, data, _, _ in rows(conn):
        data = change((seq, data))
        digest = audit._digest(prev, seq, at, actor, action, subject, data)  # type: ignore[arg-type]
        conn.execute(
            "UPDATE audit_log SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (data, prev, digest, seq),
        )
        prev = digest
    conn.execute(GUARD.format(name="audit_log_no_update", event="UPDATE", **APPEND_ONLY))


def test_verify_audit_never_creates_a_database(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --db made an empty database and printed OK (exit 0).  A name with URI
    characters in it is the file it names (it is opened read-only through a file: URI)."""
    make_key(here)
    before = sorted(p.name for p in here.iterdir())
    code, out, err = run(capsys, "verify-audit", "--db", str(here / "typo.sqlite3"))
    assert code == 1 and out == ""
    assert "the database" in one_line(err) and "does not exist" in err
    assert sorted(p.name for p in here.iterdir()) == before

    odd = str(here / "审计 #1?mode=rw.sqlite3")
    code, _, err = run(capsys, "user", "add", "chen", "--role", "viewer", "--no-password",
                       "--db", odd)  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "verify-audit", "--db", odd)
    assert code == 0 and "1 entries" in out, err


def test_an_empty_file_is_not_taken_for_an_intact_log(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "empty.sqlite3").write_bytes(b"")
    code, out, err = run(capsys, "verify-audit", "--db", str(here / "empty.sqlite3"))
    assert code == 1 and out == "" and "is empty, not a responder database" in one_line(err)
    assert (here / "empty.sqlite3").read_bytes() == b""


DAMAGE: dict[str, tuple[list[str], str]] = {
    "a value stored as a blob": (
        [
            "DROP TRIGGER audit_log_no_update",
            "UPDATE audit_log SET data = CAST(data AS BLOB) WHERE seq = 2",
        ],
        "entry 2: data holds a blob value, not text (tampered); the append-only guard"
        " audit_log_no_update was removed",
    ),
    "the audit log dropped": (["DROP TABLE audit_log"], "the audit log table is missing"),
    "a column dropped": (
        ["ALTER TABLE audit_log DROP COLUMN actor"],
        "the audit log table lacks the column(s) actor",
    ),
    "the keying mark's table dropped": (
        ["DROP TABLE audit_keyed"],
        "the table audit_keyed, which marks where keyed entries begin, is missing",
    ),
    "an append-only guard dropped": (
        ["DROP TRIGGER audit_log_no_delete"],
        "the append-only guard audit_log_no_delete was removed or changed",
    ),
    "an append-only guard made harmless": (
        [
            "DROP TRIGGER audit_log_no_update",
            "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log WHEN 0"
            " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
        ],
        "the append-only guard audit_log_no_update was removed or changed",
    ),
    "the keying mark moved on": (
        [
            "DROP TRIGGER audit_keyed_no_update",
            "UPDATE audit_keyed SET from_seq = 3",
            GUARD.format(name="audit_keyed_no_update", event="UPDATE", **WRITTEN_ONCE),
        ],
        "entry 1 was changed after it was written",
    ),
    "the keying mark not a number": (
        [
            "DROP TRIGGER audit_keyed_no_update",
            "UPDATE audit_keyed SET from_seq = 'one'",
            GUARD.format(name="audit_keyed_no_update", event="UPDATE", **WRITTEN_ONCE),
        ],
        "the table audit_keyed was changed",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_a_verdict_in_one_line_never_a_traceback(
    cli: Callable[..., tuple[int, str, str]], here: Path, damage: str
) -> None:
    """A blob, a dropped table, a dropped or emptied guard: each ended in a traceback or in OK."""
    make_key(here)
    add_users(cli, "chen", "wang", "li")
    statements, said = DAMAGE[damage]
    with tamper(here) as conn:
        for statement in statements:
            conn.execute(statement)
    code, out, err = cli("verify-audit")
    assert code == 1 and out == ""
    assert said in one_line(err)


def test_pages_damaged_below_the_tables_are_a_verdict(
    cli: Callable[..., tuple[int, str, str]], here: Path
) -> None:
    make_key(here)
    add_users(cli, *(f"user{i}" for i in range(40)))  # a few pages of entries
    path = here / "audit.sqlite3"
    with tamper(here) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'audit_log'"
        ).fetchone()
    data = bytearray(path.read_bytes())
    data[(root - 1) * 4096 : root * 4096] = b"\xff" * 4096  # the audit log's root page
    path.write_bytes(bytes(data))
    code, out, err = cli("verify-audit")
    assert code == 1 and out == ""
    assert "audit log tampered or damaged" in one_line(err)


@pytest.mark.parametrize(
    "bad",
    ["²:" + "a" * 64, "1:" + "g" * 64, "01:" + "a" * 64, "1:" + "a" * 63, "1:", ":" + "a" * 64],
)
def test_a_malformed_expect_is_one_line(cli: Callable[..., tuple[int, str, str]], bad: str) -> None:
    """'²' passed str.isdigit() and then int() raised; 64 characters that are not hex were
    taken as a head that would never match."""
    add_users(cli, "chen")
    code, out, err = cli("verify-audit", "--expect", bad)
    assert code == 1 and out == "" and "--expect takes N:HASH" in one_line(err)


# -- keyed entries -------------------------------------------------------------------------


def test_entries_written_with_the_secret_are_keyed(
    cli: Callable[..., tuple[int, str, str]], here: Path
) -> None:
    make_key(here)
    add_users(cli, "chen", "wang")
    code, out, err = cli("verify-audit")
    assert code == 0 and err == ""
    assert "audit log intact, 2 entries (keyed with the server secret from #1)" in out
    with tamper(here) as conn:
        seq, at, actor, action, subject, data, prev, digest = rows(conn)[0]
    assert digest != audit._digest(prev, seq, at, actor, action, subject, data)  # type: ignore[arg-type]


def test_an_entry_appended_with_a_correct_hash_is_caught(
    cli: Callable[..., tuple[int, str, str]], here: Path
) -> None:
    """Appended with the chain's own rule, it passed: nothing recorded a head to compare."""
    make_key(here)
    add_users(cli, "chen", "wang", "li")
    with tamper(here) as conn:
        append_forged(conn, audit._digest)
    code, out, err = cli("verify-audit")
    assert code == 1 and out == ""
    assert "entry 4 was changed after it was written, or written without the server secret" in (
        one_line(err)
    )


def test_an_entry_signed_with_another_secret_is_caught(
    cli: Callable[..., tuple[int, str, str]], here: Path
) -> None:
    make_key(here)
    add_users(cli, "chen", "wang")
    other = audit._key(b"not the server secret, 32 bytes!")
    with tamper(here) as conn:
        append_forged(conn, lambda prev, *fields: audit._keyed_digest(other, prev, *fields))
    code, _, err = cli("verify-audit")
    assert code == 1 and "entry 3 was changed after it was written" in one_line(err)


def test_a_chain_rehashed_without_the_secret_is_caught(
    cli: Callable[..., tuple[int, str, str]], here: Path
) -> None:
    make_key(here)
    add_users(cli, "chen", "wang", "li")
    with tamper(here) as conn:
        rehash_plain(conn, lambda row: '{"role":"admin"}' if row[0] == 1 else str(row[1]))
    code, _, err = cli("verify-audit")
    assert code == 1
    assert "entry 1, the first keyed one, does not match the server secret given" in (one_line(err))


def test_every_keyed_entry_cut_off_is_caught_without_a_recorded_head(
    cli: Callable[..., tuple[int, str, str]], here: Path
) -> None:
    """The mark is written with the first keyed entry: a log cut back to its unkeyed entries
    cannot pass for one that was never keyed."""
    add_users(cli, "chen")
    make_key(here)
    add_users(cli, "wang", "li")
    with tamper(here) as conn:
        conn.execute("DROP TRIGGER audit_log_no_delete")
        conn.execute("DELETE FROM audit_log WHERE seq >= 2")
        conn.execute(GUARD.format(name="audit_log_no_delete", event="DELETE", **APPEND_ONLY))
    code, _, err = cli("verify-audit")
    assert code == 1
    assert "the entries from 2 on were removed (the first keyed entry, 2, is gone)" in (
        one_line(err)
    )


def test_without_the_secret_keyed_entries_are_not_taken_for_intact(
    cli: Callable[..., tuple[int, str, str]], here: Path
) -> None:
    """Exit 1, one line: a script must not read "could not check" as "intact"."""
    make_key(here)
    add_users(cli, "chen", "wang")
    (here / "var" / "secret.key").unlink()
    code, out, err = cli("verify-audit")
    assert code == 1 and out == ""
    line = one_line(err)
    assert "audit log not fully verified: entries 1 to 2 are keyed with the server secret" in line
    assert "The key file var/secret.key does not exist and RESPONDER_SECRET is not set" in line
    make_key(here, b"another server's secret, 32 byte")
    code, _, err = cli("verify-audit")
    assert code == 1 and "does not match the server secret given" in one_line(err)


def test_a_command_without_the_secret_may_not_append_after_keyed_entries(
    cli: Callable[..., tuple[int, str, str]], here: Path
) -> None:
    """Written unkeyed, its entry would read as forged; it is refused and changes nothing."""
    make_key(here)
    add_users(cli, "chen")
    (here / "var" / "secret.key").unlink()
    code, _, err = cli("user", "add", "wang", "--role", "viewer", "--no-password", "--lang", "zh")
    assert code == 1
    assert "不能记入" in one_line(err) and "keyed with the server secret from entry 1" not in err
    code, _, err = cli("user", "add", "wang", "--role", "viewer", "--no-password", "--lang", "en")
    assert "keyed with the server secret from entry 1 on" in one_line(err)
    with tamper(here) as conn:
        assert conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 1
        assert len(rows(conn)) == 1
    assert not (here / "var" / "secret.key").exists()  # a command never makes the key


def test_entries_written_before_keying_keep_verifying_as_they_are(
    cli: Callable[..., tuple[int, str, str]], here: Path
) -> None:
    """Entries written without the secret (by a version before keying, or before the key file
    existed) are never re-hashed; keying begins with the first entry written with the secret,
    and is marked there.  (A database at schema 6 cannot be remade here once later migrations
    have added columns: the unkeyed entries stand for it.)"""
    add_users(cli, "chen", "wang")  # no secret yet: unkeyed
    with tamper(here) as conn:
        old = rows(conn)
    code, out, _ = cli("verify-audit")
    assert code == 0 and "2 entries (none keyed with the server secret)" in out
    make_key(here)
    add_users(cli, "li")  # opens (migrates) and writes the first keyed entry
    with tamper(here) as conn:
        assert rows(conn)[:2] == old
        assert conn.execute("SELECT from_seq FROM audit_keyed").fetchall() == [(3,)]
    code, out, _ = cli("verify-audit")
    assert code == 0 and "3 entries (keyed with the server secret from #3)" in out
    with tamper(here) as conn:  # an entry appended unkeyed after the mark is caught
        append_forged(conn, audit._digest)
    code, _, err = cli("verify-audit")
    assert code == 1 and "entry 4 was changed" in one_line(err)


# -- heads recorded by the service ---------------------------------------------------------


HEAD = re.compile(r"(\d+):([0-9a-f]{64})")


def declaration(clock: FakeClock) -> DeclareIncident:
    return DeclareIncident(title="江城化工园区储罐爆炸", category="accident", level="II",
                           occurred_at=clock.now() - timedelta(minutes=10),
                           lead_unit="emergency")  # fmt: skip


def admin_mails(smtp_sink: SmtpSink, cfg: Config) -> list[str]:
    """The texts of the emails to the administrators (admin-liu writes in English)."""
    admins = {p.email for p in cfg.people if p.id in cfg.alerts.admins}
    texts = []
    for m in smtp_sink.messages:
        if m["to"] in admins:
            body = m.get_body(preferencelist=("plain",))
            assert body is not None
            texts.append(f"{m['subject']}\n{body.get_content()}")
    return texts


async def test_a_close_tells_the_administrators_the_head_that_verify_audit_then_checks(
    engine: Engine,
    clock: FakeClock,
    wired: Config,
    smtp_sink: SmtpSink,
    db_path: Path,
    here: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    incident = await ops_of(engine).declare(declaration(clock), "duty")
    await settle(engine)
    before = len(admin_mails(smtp_sink, wired))
    with caplog.at_level(logging.INFO, logger="responder.audit"):
        await ops_of(engine).close(incident, CloseIncident(reason="处置完毕"), "duty")
        await settle(engine)  # the dispatcher was woken for it: nothing left queued
    head = await engine.db.fetchone("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    assert head is not None
    mark = f"{head[0]}:{head[1]}"
    [mail] = admin_mails(smtp_sink, wired)[before:]  # sent: settle saw nothing left queued
    assert f"Incident {incident} closed. The audit log's head is {mark}." in mail
    assert f"responder verify-audit --expect {mark}" in mail
    assert any(mark in r.getMessage() for r in caplog.records if r.name == "responder.audit")

    # The service's entries are keyed; the head the administrators hold checks the log.
    verdict = await audit.verify(engine.db.reader, secret=SECRET)
    assert verdict.ok and verdict.keyed_from == 1 and verdict.entries == head[0]
    unkeyed = await audit.verify(engine.db.reader)
    assert not unkeyed.ok and unkeyed.unauthenticated
    make_key(here)
    verify_audit = functools.partial(asyncio.to_thread, run, capsys, "verify-audit")
    code, out, err = await verify_audit("--expect", mark, "--db", str(db_path))
    assert code == 0 and f"{head[0]} entries" in out, err
    with sqlite3.connect(db_path) as conn:  # the close cut off, the guard remade after
        conn.execute("DROP TRIGGER audit_log_no_delete")
        conn.execute("DELETE FROM audit_log WHERE seq = ?", (head[0],))
        conn.execute(GUARD.format(name="audit_log_no_delete", event="DELETE", **APPEND_ONLY))
    code, out, err = await verify_audit("--db", str(db_path))
    assert code == 0  # the chain alone cannot tell
    code, out, err = await verify_audit("--expect", mark, "--db", str(db_path))
    assert code == 1 and f"entries from {head[0]} to {head[0]} were removed" in one_line(err)


async def test_the_head_is_recorded_each_morning_when_the_log_grew(
    engine: Engine, clock: FakeClock, wired: Config, smtp_sink: SmtpSink
) -> None:
    async def head() -> str:
        row = await engine.db.fetchone("SELECT seq, hash FROM audit_log ORDER BY seq DESC")
        assert row is not None
        return f"{row[0]}:{row[1]}"

    async def at(t: datetime) -> list[str]:
        clock.set(t)
        await quiet(clock)
        await settle(engine)
        return [HEAD.search(m).group(0) for m in admin_mails(smtp_sink, wired) if "Daily" in m]  # type: ignore[union-attr]

    await auth.add_user(engine.db, "chen", "viewer", None, clock.now(), "cli:root")
    first = await head()
    morning = next_daily(clock.now(), wired)
    assert morning.isoformat() == "2026-11-27T08:00:00+08:00"  # started at 09:00 the day before
    assert await at(morning - timedelta(minutes=1)) == []
    assert await at(morning) == [first]
    assert await at(morning + timedelta(days=1)) == [first]  # nothing new: nothing sent
    await auth.add_user(engine.db, "wang", "viewer", None, clock.now(), "cli:root")
    second = await head()
    assert await at(morning + timedelta(days=2)) == [first, second]
    assert second.split(":")[0] == "2"


def test_the_daily_time_is_in_the_configured_zone(cfg: Config) -> None:
    shanghai = datetime.fromisoformat
    assert next_daily(shanghai("2026-11-27T07:59:59+08:00"), cfg) == shanghai(
        "2026-11-27T08:00:00+08:00"
    )
    assert next_daily(shanghai("2026-11-27T00:00:00+00:00"), cfg) == shanghai(
        "2026-11-28T08:00:00+08:00"
    )
