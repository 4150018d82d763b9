"""The PostgreSQL store itself: what differs from SQLite, and what must not.

The behaviour of the engine and the operations is tested on both stores by their own tests
(conftest's BOTH_STORES); here: the schema's version and its refusal of a newer one, replicas
migrating together, the password kept out of messages, text that PostgreSQL cannot hold, and a
server lost and found again under a running store.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import psycopg
import pytest

from responder.clock import FakeClock
from responder.config import Config
from responder.errors import BadInput, ResponderError, Unavailable
from responder.models import DeclareIncident
from responder.ops import Ops
from responder.store import open_store, sqlite_path
from responder.store.pg import PgDatabase, _migrations, masked
from responder.store.pg_connection import translate
from tests.pg_server import PgServer, fresh_database


def test_the_sqlite_text_of_a_query_is_spoken_to_postgresql() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b LIKE '%x?' AND c = :name") == (
        "SELECT * FROM t WHERE a = %s AND b LIKE '%%x?' AND c = %(name)s",
        False,
    )
    assert translate("INSERT OR IGNORE INTO audit_keyed (id, from_seq) VALUES (1, ?)") == (
        "INSERT INTO audit_keyed (id, from_seq) VALUES (1, %s) ON CONFLICT DO NOTHING",
        False,
    )
    sql, returns_id = translate("INSERT INTO steps (name) VALUES (?)")
    assert sql.endswith(" RETURNING id") and returns_id
    assert translate("SELECT x::text FROM t")[0] == "SELECT x::text FROM t"


def test_the_store_is_chosen_by_the_setting() -> None:
    assert isinstance(open_store("postgresql://u@h/db"), PgDatabase)
    assert isinstance(open_store("postgres://u@h/db"), PgDatabase)
    assert sqlite_path("sqlite:var/r.sqlite3") == "var/r.sqlite3"
    assert masked("postgresql://resp:s3cret@db:5432/r") == "postgresql://resp:***@db:5432/r"


async def test_a_newer_schema_is_refused_and_left_as_it_is(pg_server: PgServer) -> None:
    url = fresh_database(pg_server.url())
    known = _migrations()[-1][0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (known + 1,))
    with pytest.raises(ResponderError) as refused:
        await PgDatabase(url).open()
    assert refused.value.code == "database_too_new"
    assert f"its schema version {known + 1}, this one knows up to {known}" in refused.value.en
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (known + 1,)


async def test_replicas_starting_together_migrate_once(pg_server: PgServer) -> None:
    url = pg_server.create_database()  # empty: the first start makes the schema
    stores = [PgDatabase(url) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    for s in stores:
        await s.close()
    with psycopg.connect(url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == [v for v, _ in _migrations()]


async def test_a_wrong_password_is_one_line_without_the_password(pg_server: PgServer) -> None:
    url = f"postgresql://nobody:hunter2-secret@127.0.0.1:{pg_server.port}/nothing"
    with pytest.raises(ResponderError) as refused:
        await PgDatabase(url).open()
    assert refused.value.code == "database_unavailable"
    assert "hunter2" not in refused.value.en + refused.value.zh
    assert "nobody:***@127.0.0.1" in refused.value.en


async def test_text_postgresql_cannot_hold_is_refused_as_bad_input(pg_server: PgServer) -> None:
    """Request bodies refuse control characters already; a NUL can still come in a path or
    a query (``/api/v1/incidents/%00``): refused as bad input, not a driver error (a 500)."""
    async with PgDatabase(fresh_database(pg_server.url())) as db:
        with pytest.raises(BadInput) as refused:
            await db.fetchone("SELECT * FROM incidents WHERE id = ?", ("INC\x00",))
        assert refused.value.code == "invalid" and "NUL" in refused.value.en
        with pytest.raises(BadInput):
            await db.transact(
                lambda tx: tx.execute("UPDATE incidents SET title = ? WHERE id = 'x'", ("\x00",))
            )


async def test_a_server_lost_and_found_refuses_changes_meanwhile_then_takes_them(
    pg_server: PgServer, cfg: Config, clock: FakeClock
) -> None:
    """While the server is down a change is answered 503 (nothing half-done) and the store
    says why; when it is back, the next change goes through on new connections."""
    async with PgDatabase(fresh_database(pg_server.url())) as db:
        ops = Ops(db, cfg, clock)  # type: ignore[arg-type]

        def body(title: str) -> DeclareIncident:
            return DeclareIncident(
                title=title,
                category="accident",
                level="II",
                occurred_at=clock.now(),
                lead_unit="emergency",
            )

        await ops.declare(body("before"), "test")
        pg_server.pg_ctl("stop", "-m", "fast", "-w")
        try:
            with pytest.raises(Unavailable) as refused:
                await ops.declare(body("while down"), "test")
            assert refused.value.status == 503
            assert db.write_fault is not None and "cannot be reached" in db.write_fault[0]
            with pytest.raises(Unavailable):
                await db.fetchone("SELECT 1")
        finally:
            pg_server.pg_ctl("start", "-w", "-t", "60")
        # A commit that changes nothing (an idle dispatcher's claim) proves the server back:
        # the fault clears (for a full disk it would not: see WriteState.wrote).
        await db.transact(lambda tx: tx.execute("SELECT 1"))
        assert db.write_fault is None
        await ops.declare(body("after"), "test")
        titles = [r[0] for r in await db.fetchall("SELECT title FROM incidents ORDER BY id")]
        assert titles == ["before", "after"]
        assert db.write_fault is None


def test_times_are_text_in_utc_as_on_sqlite(pg_server: PgServer) -> None:
    """Stored as the same UTC text as on SQLite, compared as text by every query."""
    url = fresh_database(pg_server.url())

    async def declare() -> str:
        async with PgDatabase(url) as db:
            cfg_clock = FakeClock(datetime.fromisoformat("2026-11-26T09:00:00+08:00"))
            from responder import config
            from tests.conftest import CONFIG_PATH

            loaded = config.load(CONFIG_PATH)
            ops = Ops(db, loaded, cfg_clock)  # type: ignore[arg-type]
            iid = await ops.declare(
                DeclareIncident(
                    title="t",
                    category="accident",
                    level="II",
                    occurred_at=cfg_clock.now(),
                    lead_unit="emergency",
                ),
                "test",
            )
            return str(iid)

    iid = asyncio.run(declare())
    with psycopg.connect(url) as conn:
        (occurred,) = conn.execute(
            "SELECT occurred_at FROM incidents WHERE id = %s", (iid,)
        ).fetchone()  # type: ignore[misc]
    assert occurred == "2026-11-26T01:00:00.000000Z"
