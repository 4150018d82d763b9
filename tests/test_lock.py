"""One ``responder serve`` per database, as an administrator would meet it: two real processes
on one SQLite file.

A second service on the same database takes the first one's sends in flight for crashed ones
and sends them again (a tester saw two voice calls go out twice); it must be refused before it
reads anything.  The lock that prevents it was
held on ``<database>.lock``, a file anyone could delete; it is now held on the database file
itself, which cannot be deleted without taking the data with it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.test_serve import CONFIG_PATH, LIMIT, Service, call, declare, statuses


class Second(Service):
    """Another ``responder serve`` on the same database (and its own port)."""

    def try_start(self) -> int | None:
        """Start it; return its exit code once it ends, or None if it is serving."""
        command = ["-m", "responder.cli", "--config", str(CONFIG_PATH), "serve"]
        self.proc = subprocess.Popen(
            [sys.executable, *command, "--port", str(self.port), "--log-format", "json"],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_for(
            lambda: self.logged(" serving on http://") or self.proc.poll() is not None,  # type: ignore[union-attr]
            "the second service to serve or to end",
        )
        return self.proc.wait(LIMIT) if not self.logged(" serving on http://") else None


@pytest.fixture
def services() -> Any:
    made: list[Service] = []
    yield made
    for s in made:
        s.kill()


def rows(db: Path) -> list[tuple[Any, ...]]:
    """Every notification and attempt: what a second dispatcher would change first."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return (
            conn.execute("SELECT * FROM notifications").fetchall()
            + conn.execute("SELECT * FROM attempts").fetchall()
        )


def test_a_second_service_is_refused_even_after_the_lock_file_is_deleted(
    tmp_path: Path, services: list[Service]
) -> None:
    first = Service(tmp_path)
    services.append(first)
    token = first.token()
    first.start()
    declare(first, token)
    first.wait_for(lambda: statuses(first.db) == {"sent": 3}, "the declaration's three alerts")
    before = rows(first.db)
    Path(f"{first.db}.lock").unlink(missing_ok=True)  # what the tester did

    second = Second(tmp_path)
    services.append(second)
    assert second.db == first.db and second.port != first.port
    code = second.try_start()
    assert code == 1, "\n".join(second.lines[-20:])
    assert not any("Traceback" in line for line in second.lines)
    assert second.lines[-1] == (
        f"responder: 另一个 responder 服务已在使用数据库 {first.db},不能同时运行两个"
    )
    assert rows(first.db) == before  # the second one touched nothing
    assert call(first.base + "/healthz")[0] == 200  # and the first one serves on
    assert first.stop() == 0

    again = Second(tmp_path)  # the first one stopped: its database is free again
    services.append(again)
    assert again.try_start() is None, "\n".join(again.lines[-20:])
    assert again.stop() == 0


def test_the_database_serve_makes_is_still_announced(
    tmp_path: Path, services: list[Service]
) -> None:
    """The lock creates a missing database file (empty) before the database is opened: that
    must not hide the warning that a new, empty database was made (a mistyped path)."""
    svc = Service(tmp_path)
    services.append(svc)
    svc.start()
    assert svc.logged(f"the database {svc.db} did not exist: created a new, empty one")
    assert svc.stop() == 0
    assert not Path(f"{svc.db}.lock").exists()
