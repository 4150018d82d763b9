"""The store: SQLite (embedded, the default) or PostgreSQL (several replicas), chosen by the
config's ``service.database``.  Writes are jobs on one writer thread (``transact``), reads go
to readers.  The database is the truth for every timer and message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from responder.store.db import Database

if TYPE_CHECKING:
    from responder.store.pg import PgDatabase

__all__ = ["Database", "is_postgresql", "open_store", "sqlite_path"]


def is_postgresql(setting: str) -> bool:
    return setting.startswith(("postgresql://", "postgres://"))


def sqlite_path(setting: str) -> str:
    """The SQLite file a setting names (``sqlite:`` in front is allowed, and dropped)."""
    return setting.removeprefix("sqlite://").removeprefix("sqlite:")


def open_store(setting: str) -> Database | PgDatabase:
    """The store ``service.database`` names, not yet opened: a ``postgresql://`` URL, or a
    SQLite file (a path, or ``sqlite:PATH``)."""
    if is_postgresql(setting):
        from responder.store.pg import PgDatabase  # psycopg is loaded only when used

        return PgDatabase(setting)
    return Database(sqlite_path(setting))
