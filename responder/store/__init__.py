"""The store: SQLite through aiosqlite.  The database is the truth for every timer and message."""

from responder.store.db import Database

__all__ = ["Database"]
