"""One engine per database: ``responder serve`` holds an exclusive lock on ``<database>.lock``.

A second dispatcher on the same database would take the first one's sends in flight for
crashed ones and send them again; the lock turns that mistake into a clear refusal.
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
    if database == ":memory:":
        yield
        return
    path = database + ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
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
        os.close(fd)  # closing the descriptor releases the lock
