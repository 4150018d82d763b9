"""The database refusing writes: locked by another process, a full disk, read-only.

Found by a tester: another process holding ``BEGIN EXCLUSIVE`` for 10 s made the first
declaration a 500 ``internal`` after 5 s ("database is locked"); on a 5 MB filesystem 40 of 40
declarations were 500s ("database or disk is full") while ``/healthz`` said ok.

Now each is a 503 the client can act on — ``database_busy`` or ``storage_unavailable``, with
``Retry-After`` — within a bound, and nothing half-written; ``/healthz`` answers 503 saying why;
the engine pauses and resumes by itself, logging each change of state once.

How the faults are made, with real parts:

* The lock: a real second process holds ``BEGIN EXCLUSIVE`` on the same file, as the tester's
  did (in WAL mode that takes the write lock; readers go on).
* A full disk: ``PRAGMA max_page_count`` set to the database's current size on the service's
  writer connection.  SQLite then refuses to grow the file with SQLITE_FULL, "database or disk
  is full" — the very code and message a full filesystem gives (checked on a 5 MB tmpfs: the
  WAL could not grow), and, like it, SQLite rolls the whole transaction back.  A filesystem of
  our own would need a root mount.
* A read-only database: ``PRAGMA query_only`` on the writer connection.  Every write is
  refused with SQLITE_READONLY, "attempt to write a readonly database", as for a file or a
  filesystem mounted read-only (chmod is no test here: the suite may run as root, who writes
  anyway, and an open file keeps its write access).
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from responder.errors import Unavailable
from responder.store import Database
from responder.store.db import BUSY_TIMEOUT_MS, RETRY_AFTER
from tests.web_helpers import PASSWORD, Web, assert_error_body

pytest_plugins = ["tests.web_fixtures"]

INCIDENTS = "/api/v1/incidents"
WAIT = BUSY_TIMEOUT_MS / 1000
MARGIN = 2.0  # seconds beyond the lock wait: only a request that waited twice takes longer
Dump = Callable[[Database], Awaitable[dict[str, list[tuple[Any, ...]]]]]

_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@contextmanager
def held_by_another_process(path: str) -> Iterator[None]:
    """Another program (a backup, an administrator's sqlite3 shell) holds the database's write
    lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)


async def refused_with(resp: Any, code: str) -> dict[str, Any]:
    data = await resp.json()
    assert resp.status == 503, data
    assert_error_body(data)
    assert data["error"] == code, data
    assert resp.headers["Retry-After"] == str(RETRY_AFTER)
    return data


async def health_problems(web: Web) -> list[str]:
    """What ``/healthz`` says is wrong (503), or [] (200).  The engine's own state aside: the
    API tests here run without it."""
    resp = await web.get("/healthz")
    body = await resp.json()
    assert (resp.status == 503) == (body["status"] == "unhealthy")
    return [p for p in body["problems"] if p != "engine not running"]


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


# -- finding 3: locked by another process -------------------------------------------------------


async def test_a_database_locked_by_another_process_is_a_503_within_a_bound(
    web: Web, dump_tables: Dump, caplog: pytest.LogCaptureFixture
) -> None:
    """Six declarations while another process holds the lock: each is answered 503
    ``database_busy`` with Retry-After after waiting about the busy timeout — none a 500, none
    waiting once per declaration queued ahead of it — and none left anything behind.  Once the
    lock is released the same declaration is accepted."""
    caplog.set_level(logging.INFO, "responder.store")
    await web.get(INCIDENTS)  # the token's use is noted now, not under the lock
    before = await dump_tables(web.db)
    with held_by_another_process(web.db.path):

        async def declare() -> tuple[float, Any]:
            started = time.monotonic()
            resp = await web.post(INCIDENTS, web.declaration())
            await resp.read()
            return time.monotonic() - started, resp

        answers = await asyncio.gather(*(declare() for _ in range(6)))
        for took, resp in answers:
            data = await refused_with(resp, "database_busy")
            assert "未作任何更改" in data["message"] and "nothing was changed" in data["message_en"]
            assert took < WAIT + MARGIN, f"answered after {took:.1f} s"
        assert await dump_tables(web.db) == before
        assert await health_problems(web) == [
            "the database cannot be written: another program holds it locked; changes are"
            " refused and alerts wait"
        ]
    await web.declare()
    assert await health_problems(web) == []
    assert not lines(caplog, "unhandled error")
    assert len(lines(caplog, "cannot be written")) == 1  # once for the episode, not per request
    assert len(lines(caplog, "can be written again")) == 1


async def test_noting_a_tokens_use_does_not_wait_for_the_lock(db: Database) -> None:
    """Bookkeeping that may be skipped (``wait=False``) is refused at once under the lock
    instead of making its request wait the lock's timeout before its real work waits again
    (a declaration took 8 s so)."""
    ran: list[str] = []
    with held_by_another_process(db.path):
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            await db.transact(lambda tx: ran.append("noted"), wait=False)
        assert time.monotonic() - started < WAIT / 2
    assert refused.value.code == "database_busy" and ran == []
    await db.transact(lambda tx: ran.append("noted"), wait=False)
    assert ran == ["noted"]


async def test_signing_in_while_locked_shows_a_503_page_not_the_500_page(web: Web) -> None:
    """A person signing in while the database is locked (the session is a write) reads a
    503 page saying so, with Retry-After; not the 500 page."""
    await web.add_login_user("duty-wang")
    form = await web.client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', await form.text())
    assert csrf is not None
    with held_by_another_process(web.db.path):
        resp = await web.client.post(
            "/login",
            data={"username": "duty-wang", "password": PASSWORD, "csrf": csrf.group(1)},
            allow_redirects=False,
        )
        page = await resp.text()
    assert resp.status == 503, page[:300]
    assert resp.headers["Retry-After"] == str(RETRY_AFTER)
    assert "正被其他程序锁定" in page and "holds the database locked" in page
