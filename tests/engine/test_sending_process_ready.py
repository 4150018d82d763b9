"""The sending process gets ready before its first message, runs the installed package whatever
the working directory, and says so when it cannot send (issue 14, findings 13 and 15).

13. The first alert after every start was late by apprise loading its plugins (~150–450 ms) on
    its first ``add()`` in the sending process.
15. Started from a directory holding a ``responder/`` folder (the parent of a checkout), the
    sending process imported that folder: multiprocessing's fork server runs as ``python -c``,
    with the working directory first on its ``sys.path``, and swallows the ImportError of its
    preload; every child forked from it failed as it re-ran the service's main module
    (``cannot import name '__version__'``), and no message went out while the API answered 201
    and ``/healthz`` said ok.

Real processes throughout: ``responder serve`` from its console script, in a temporary working
directory that holds a bogus ``responder`` package; scripts of their own for the rest.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from responder.engine.sending_process import Sender
from tests.conftest import CONFIG_PATH
from tests.sinks import HttpSink, free_port
from tests.test_serve import LIMIT, PASSWORD, SERVER_SECRET, Watched, call, declaration

ROOT = Path(__file__).resolve().parents[2]
# The console script an administrator runs: its sys.path does not hold the working directory.
CONSOLE_SCRIPT = Path(sys.executable).parent / "responder"
BOGUS = '"""Not the service: a folder that happens to be called responder."""\n'


class Served(Watched):
    """``responder serve`` started by ``command`` in ``cwd``, its stderr read as it comes."""

    def __init__(self, cwd: Path, command: list[str]) -> None:
        super().__init__()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = cwd / "responder.sqlite3"
        self.cwd = cwd
        self.env = {
            **os.environ,
            "RESPONDER_DB": str(self.db),
            "RESPONDER_PUBLIC_URL": self.base,
            "RESPONDER_DEV_INBOX": f"127.0.0.1:{self.port}",
            "RESPONDER_SECRET": SERVER_SECRET,
            "RESPONDER_PASSWORD": PASSWORD,
        }
        self.env.pop("RESPONDER_CONFIG", None)
        self.command = command
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(CONSOLE_SCRIPT), "--config", str(CONFIG_PATH), *args],
            env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=LIMIT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def token(self) -> str:
        self.cli("user", "add", "chen", "--role", "duty_officer")
        return self.cli("token", "create", "chen")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*self.command, "--config", str(CONFIG_PATH), "serve", "--port", str(self.port)],
            env=self.env, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_logged(" serving on http://")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        self.notify()

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait_logged(self, *texts: str) -> None:
        """Until one of ``texts`` is logged (or the process ends)."""
        self.wait_for(
            lambda: any(self.logged(t) for t in texts) or self.proc.poll() is not None,  # type: ignore[union-attr]
            " or ".join(texts),
        )

    def health(self) -> tuple[int, dict[str, Any]]:
        status, _, body = call(self.base + "/healthz")
        return status, json.loads(body)

    def declare(self, token: str) -> None:
        status, _, body = call(
            self.base + "/api/v1/incidents", "POST", declaration(),
            {"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        assert status == 201, body

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(LIMIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(LIMIT)


def test_started_beside_a_responder_folder_it_sends_with_the_installed_package(
    tmp_path: Path,
) -> None:
    """From a directory holding a ``responder/`` package, as the tester did: the alerts of a
    declaration go out, and /healthz says the sending process is ready."""
    assert CONSOLE_SCRIPT.exists(), "the package is installed with its console script"
    (tmp_path / "responder").mkdir()
    (tmp_path / "responder" / "__init__.py").write_text(BOGUS, encoding="utf-8")
    svc = Served(tmp_path, [str(CONSOLE_SCRIPT)])
    token = svc.token()
    svc.start()
    try:
        svc.declare(token)
        svc.wait_logged("sent notification ", "failed", "cannot send")
        assert svc.logged("sent notification "), "\n".join(svc.lines[-20:])
        assert not any("ImportError" in line or "Traceback" in line for line in svc.lines)
        status, body = svc.health()
        assert status == 200 and body["alerts"]["sending_process"] == "ready", body
    finally:
        svc.stop()


def test_a_sending_process_that_cannot_send_makes_healthz_say_so_and_spends_nothing(
    tmp_path: Path,
) -> None:
    """The fork server already started the old way (by another part of the process) from a
    directory holding a ``responder/`` folder: every child runs that folder's package.  The
    child refuses (or dies, with an installation that finds no engine there); /healthz says so —
    503, in both languages — and the dispatcher claims nothing meanwhile: the declaration's
    alerts wait queued instead of being spent, try after try, on a process that cannot send."""
    (tmp_path / "responder").mkdir()
    (tmp_path / "responder" / "__init__.py").write_text(BOGUS, encoding="utf-8")
    script = tmp_path.parent / f"{tmp_path.name}-serve.py"
    script.write_text(
        "import multiprocessing.forkserver, sys\n"
        "from responder.cli import main\n"
        "from responder.engine import sending_process  # its preload set\n"
        "if __name__ == '__main__':\n"
        "    multiprocessing.forkserver.ensure_running()  # the old way: cwd first\n"
        "    sys.exit(main())\n",
        encoding="utf-8",
    )
    svc = Served(tmp_path, [sys.executable, str(script)])
    token = svc.token()
    svc.start()
    try:
        svc.wait_logged("the sending process cannot send")
        status, body = svc.health()
        assert status == 503, body
        [en] = [p for p in body["problems"] if p.startswith("the sending process cannot send")]
        assert "another 'responder' package" in en or "it exited as it started" in en, en
        [zh] = [p for p in body["problems_zh"] if p.startswith("发送进程无法发送提醒")]
        assert "另一个 responder 包" in zh or "发送进程一启动即退出" in zh, zh
        assert body["alerts"]["sending_process"] == "cannot send"

        svc.declare(token)
        tries = len([line for line in svc.lines if "cannot send" in line])
        svc.wait_for(  # the next start, a few seconds on, fails the same way
            lambda: len([line for line in svc.lines if "cannot send" in line]) > tries,
            "another start of the sending process",
        )
        with sqlite3.connect(svc.db) as conn:
            queued = conn.execute("SELECT COUNT(*) FROM notifications WHERE status = 'queued'")
            attempts = conn.execute("SELECT COUNT(*) FROM attempts")
            assert queued.fetchone()[0] > 0 and attempts.fetchone()[0] == 0
    finally:
        svc.stop()


def test_a_child_running_another_responder_package_is_refused(tmp_path: Path) -> None:
    """If the fork server was started before the service could start it right (another part
    of the process started it, from a directory with a ``responder/`` folder), the child runs
    that folder's package: it says so at once instead of failing every send."""
    (tmp_path / "responder").mkdir()
    (tmp_path / "responder" / "__init__.py").write_text(BOGUS, encoding="utf-8")
    script = tmp_path.parent / f"{tmp_path.name}-probe.py"
    script.write_text(
        "import asyncio, multiprocessing.forkserver, sys\n"
        "from responder.engine.sending_process import Sender, SenderUnavailable\n"
        "async def main():\n"
        "    sender = Sender(timeout=5)\n"
        "    try:\n"
        "        await sender.start()\n"
        "    except SenderUnavailable as e:\n"
        "        print(e.args[0], flush=True)\n"
        "    print('ready' if sender.ready else 'not ready', flush=True)\n"
        "if __name__ == '__main__':\n"
        "    multiprocessing.forkserver.ensure_running()  # the old way: cwd first\n"
        "    asyncio.run(main())\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=LIMIT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    why, ready = done.stdout.strip().splitlines()
    assert ready == "not ready"
    # An editable install finds the engine beside the wrong top-level package; a plain one
    # finds no engine at all, and the child dies as it starts.
    assert why.startswith(
        (f"it imported another 'responder' package ({tmp_path / 'responder'})",
         "it exited as it started")
    ), why  # fmt: skip


async def test_the_sending_process_is_ready_to_send_before_its_first_message() -> None:
    """apprise's plugins are loaded before the child says it is ready: its first send is as
    quick as any (a local post takes a few milliseconds; loading the plugins took 150–450)."""
    async with HttpSink() as sink:
        sender = Sender(timeout=10)
        await sender.start()
        try:
            outcome = await sender.send(sink.json_url("sms"), "标题", "正文", "sms")
            assert outcome.ok, outcome
            assert outcome.seconds < 0.12, f"first send took {outcome.seconds * 1000:.0f} ms"
            assert sender.problem is None
        finally:
            await sender.close()
