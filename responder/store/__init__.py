"""The store: SQLite.  Writes are jobs on one writer thread (``Database.transact``), reads go
through aiosqlite.  The database is the truth for every timer and message."""

from responder.store.db import Database

__all__ = ["Database"]
