"""One engine per database: ``responder serve`` holds an exclusive ``flock`` on the database
file itself for as long as it runs.

A second dispatcher on the same database would take the first one's sends in flight for
crashed ones and send them again; the lock turns that mistake into a clear refusal.  It used to
be held on a separate ``<database>.lock``, which anyone could delete, after which a second
service started (and re-sent two voice calls in flight).  The database file cannot be deleted
without taking the data with it, and a replaced or deleted database is reported by
``/healthz`` (:meth:`Database.file_state`).

Why ``flock`` on the file SQLite itself locks: SQLite's unix VFS locks the database (and, in
WAL mode, its ``-shm``) with POSIX ``fcntl`` byte-range locks.  On Linux ``flock`` locks live
apart from ``fcntl`` locks — ``/proc/locks`` lists both on the same inode — so this lock never
blocks SQLite, here or in a command (``responder user add``) reading and writing meanwhile,
and SQLite's locks never block this one.  (On NFS Linux emulates ``flock`` with ``fcntl`` locks,
and the two would clash; SQLite's WAL mode does not work on network filesystems anyway.)

The one trap: closing *any* descriptor of a file drops every POSIX lock this process holds on
it — SQLite's shared lock included, after which another process could checkpoint and delete
the WAL under the open connections.  So the descriptor stays open until the service, with
every connection of its database, has stopped; it is opened before the first connection, and
closed at once only when the lock is refused (no connection exists yet).  ``os.open``
descriptors are not inherited by child processes (PEP 446): the sending process holds no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from responder.errors import Conflict
from responder.store.db import unavailable


@contextlib.contextmanager
def instance_lock(database: str) -> Iterator[None]:
    """Hold the database for this process; refuse (``already_running``) if another holds it.

    A missing database is created empty here (SQLite takes an empty file as an empty database;
    opening it then says that it was created)."""
    if database == ":memory:":
        yield
        return
    try:
        fd = os.open(database, os.O_RDONLY | os.O_CREAT, 0o644)  # as SQLite makes it
    except OSError as e:
        raise unavailable(database, e) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                "already_running",
                f"另一个 responder 服务已在使用数据库 {database},不能同时运行两个",
                f"another responder is already serving the database {database}",
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock; the database's connections are closed by now
