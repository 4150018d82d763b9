"""Shared fixtures for the whole suite: the deadline core's tests and the engine / web tests.

Kept deliberately generic so that later tests can reuse them as they are:

* ``cfg_env`` — the environment ``${NAME}`` substitution sees while ``cfg`` loads.  Override it
  in a test module (a fixture of the same name) to point the channels at test sinks, e.g.
  ``{"RESPONDER_DEV_INBOX": f"127.0.0.1:{port}"}``.
* ``cfg`` — ``config/responder.toml`` as shipped, with ``service.database`` set to ``db_path``.
* ``clock`` — a :class:`~responder.clock.FakeClock` at 2026-11-26T09:00:00+08:00; it moves only
  when a test moves it.  Nothing in the suite sleeps on the wall clock.
* ``db_path`` / ``db`` — a real SQLite *file* in ``tmp_path`` (WAL, triggers, migrations), opened
  for the test and closed after it.
* ``ops`` — :class:`~responder.ops.Ops` over those three; ``ops_wakes`` counts its wake-ups.
* ``dump_tables`` — every table's rows, to prove that a refused operation changed nothing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from responder import config
from responder.clock import FakeClock
from responder.ops import Ops
from responder.store import Database, open_store
from tests.pg_server import PgServer, fresh_database

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = ROOT / "config" / "responder.toml"
START = datetime.fromisoformat("2026-11-26T09:00:00+08:00")

# Property tests explore new examples on every run; CI (.ci/run sets HYPOTHESIS_PROFILE=ci)
# draws the same ones each time, so what lands does not depend on a lucky draw.  A failure
# found locally is fixed, and its example kept with @example, before it lands.
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Every variable the example config substitutes: cleared so the developer's shell cannot leak in.
CONFIG_ENV = ("RESPONDER_DB", "RESPONDER_PUBLIC_URL", "RESPONDER_DEV_INBOX")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "responder.sqlite3"


# The behaviour tests of the engine and the operations run on both stores; the rest (the
# file-level faults of SQLite, the pages, the CLI) on SQLite.  A test about SQLite itself in
# these modules is marked ``sqlite_only``.
BOTH_STORES = (
    "tests/engine/",
    "tests/test_ops.py",
    "tests/test_accountability.py",
    "tests/api/test_api_idempotency.py",
    "tests/api/test_api_incidents_and_milestones.py",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: about SQLite itself, not run on PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store" not in metafunc.fixturenames:
        return
    where = Path(str(metafunc.definition.path)).relative_to(ROOT).as_posix()
    both = where.startswith(BOTH_STORES) and not metafunc.definition.get_closest_marker(
        "sqlite_only"
    )
    metafunc.parametrize("store", ["sqlite", "postgresql"] if both else ["sqlite"], indirect=True)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole run (started on first use)."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(store: str, db_path: Path, request: pytest.FixtureRequest) -> str:
    """``service.database`` for the test: a SQLite file, or a new migrated PostgreSQL
    database on the run's server."""
    if store == "postgresql":
        server: PgServer = request.getfixturevalue("pg_server")
        return fresh_database(server.url())
    return str(db_path)


@pytest.fixture
def cfg_env() -> dict[str, str]:
    """Extra environment for loading the config; override per module when needed."""
    return {}


@pytest.fixture
def cfg(cfg_env: dict[str, str], database: str, monkeypatch: pytest.MonkeyPatch) -> config.Config:
    for name in CONFIG_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in cfg_env.items():
        monkeypatch.setenv(name, value)
    loaded = config.load(CONFIG_PATH)
    loaded.service.database = database
    return loaded


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def db(database: str) -> AsyncIterator[Database]:
    store = open_store(database)
    await store.open()
    try:
        yield store  # type: ignore[misc]
    finally:
        await store.close()


@pytest.fixture
def ops_wakes() -> list[int]:
    """One entry per scheduler wake-up ``ops`` asked for."""
    return []


@pytest.fixture
def ops(db: Database, cfg: config.Config, clock: FakeClock, ops_wakes: list[int]) -> Ops:
    return Ops(db, cfg, clock, wake=lambda: ops_wakes.append(1))


async def _dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    if getattr(db, "dialect", "sqlite") == "postgresql":
        listing = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema ="
            " current_schema() AND table_name != 'schema_version' ORDER BY table_name"
        )
    else:
        listing = (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
    tables = [r[0] for r in await db.fetchall(listing)]
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in tables:
        # In the order rows were written: rowid on SQLite; on PostgreSQL every table has a
        # key that grows with it (id or seq), or is one row per key (counters, sessions).
        order = "rowid" if listing.startswith("SELECT name") else "1"
        rows = await db.fetchall(f'SELECT * FROM "{table}" ORDER BY {order}')
        out[table] = [tuple(r) for r in rows]
        if table == "tokens":  # any request with a token notes its use; that is not a change
            out[table] = [
                tuple(v for k, v in zip(r.keys(), r, strict=True) if k != "last_used_at")
                for r in rows
            ]
    return out


@pytest.fixture
def dump_tables() -> Callable[[Database], Awaitable[dict[str, list[tuple[Any, ...]]]]]:
    """``await dump_tables(db)``: {table: rows} for every table, in rowid order (without
    ``tokens.last_used_at``)."""
    return _dump
