"""A throwaway PostgreSQL server for the tests, from Debian's ``postgresql`` binaries.

``initdb`` into a temporary folder, ``pg_ctl start`` on a free port on 127.0.0.1 (and a unix
socket in the same folder), one database per test (``CREATE DATABASE … TEMPLATE`` of one
migrated once, so a test starts from an empty, migrated store in a few milliseconds).
PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user the
package creates.

Where the binaries are missing the PostgreSQL tests skip and say why — except under CI
(``CI`` set, as ``.ci/run`` does), where their absence fails the run: replicas must be tested.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(found[-1]).parent if found else None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL server in a temporary folder, started and stopped by the test run."""

    def __init__(self) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            message = "PostgreSQL is not installed (apt-get install postgresql)"
            if os.environ.get("CI"):
                pytest.fail(f"{message}: CI must test the PostgreSQL store", pytrace=False)
            pytest.skip(message)
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="responder-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._databases = 0
        self.fsync = False  # the tests' server need not survive a power cut; a benchmark's does

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if os.geteuid() == 0:  # initdb and postgres refuse root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> PgServer:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
            "-E", "UTF8", "--locale", "C", "--no-sync",
        )  # fmt: skip
        self.pg_ctl("start", "-w", "-t", "60")
        return self

    def pg_ctl(self, action: str, *extra: str) -> None:
        durability = "" if self.fsync else " -c fsync=off -c full_page_writes=off"
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            f" -c max_connections=200{durability}"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", options, action, *extra,
        )  # fmt: skip

    def restart(self) -> None:
        """Stop (fast: connections are cut) and start again on the same port and data."""
        self.pg_ctl("restart", "-m", "fast", "-w", "-t", "60")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "stop", "-m", "immediate",
                  check=False)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a copy of ``template``); its URL."""
        import psycopg

        self._databases += 1
        name = f"e{os.getpid()}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            suffix = f" TEMPLATE {template}" if template else ""
            conn.execute(f"CREATE DATABASE {name}{suffix}")
        return self.url(name)


_TEMPLATES: dict[str, str] = {}


def fresh_database(server_url: str) -> str:
    """A new database on the server at ``server_url``, migrated (a copy of a template
    migrated once per run)."""
    import asyncio

    import psycopg

    from responder.store.pg import PgDatabase

    base = server_url.rsplit("/", 1)[0]
    if server_url not in _TEMPLATES:
        name = f"tmpl{os.getpid()}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")

        async def migrate() -> None:
            async with PgDatabase(f"{base}/{name}"):
                pass

        asyncio.run(migrate()) if not _loop_running() else _in_thread(migrate)
        _TEMPLATES[server_url] = name
    global _COUNT
    _COUNT += 1
    db = f"t{os.getpid()}_{_COUNT}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db} TEMPLATE {_TEMPLATES[server_url]}")
    return f"{base}/{db}"


_COUNT = 0


def _loop_running() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_thread(coro_fn: Any) -> None:
    import asyncio
    import threading

    t = threading.Thread(target=lambda: asyncio.run(coro_fn()))
    t.start()
    t.join()
