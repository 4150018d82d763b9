"""Stopping ``responder serve`` the ways it is really stopped, within a bound.

A stop signal rarely reaches the service alone.  systemd (``KillMode=control-group``) and
``kill -TERM -- -PGID`` signal the whole process group: the service, multiprocessing's fork
server and resource tracker, and the sending process.  ``make run`` forwards the SIGTERM it
receives to its child, so the service gets it twice.  Ctrl-C in a terminal reaches the group
too, and an impatient operator presses it again.

Before the fix, a second signal arriving while the service was stopping raised aiohttp's
GracefulExit a second time, in the middle of the clean-up: the engine's stop was cancelled, the
database was never closed, and the process hung for ever on exit, waiting for aiosqlite's
thread (found by ``make run``, a few declarations, then ``kill -TERM -- -PGID``).

Real processes on real ports; every wait is for something the service does, bounded only so
that a hang fails.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIG_PATH
from tests.test_serve import HeldGateway, Service, declare, statuses

STOP_BOUND = 15.0  # seconds from the signal to the whole process group having exited


class GroupService(Service):
    """``responder serve`` in a process group of its own (``start_new_session``), as systemd
    or a terminal runs it; optionally under ``make``, as ``make run`` does."""

    def start_in_group(self, under_make: bool = False) -> None:
        command = [sys.executable, "-m", "responder.cli", "--config", str(CONFIG_PATH), "serve"]
        command += ["--port", str(self.port), "--log-format", "json"]
        if under_make:
            makefile = self.cwd / "Makefile"
            makefile.write_text(f"run:\n\t{shlex.join(command)}\n", encoding="utf-8")
            command = ["make", "-s", "-f", str(makefile), "run"]
        self.proc = subprocess.Popen(
            command,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_logged(" serving on http://")

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # the session leader: its pid is the group's id

    def running_in_group(self) -> list[str]:
        """The processes of the group still running (zombies, whose parent has not reaped them
        yet, have ended already)."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'
            state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == self.pgid and state != "Z":
                out.append(f"{entry.name} {(entry / 'cmdline').read_bytes()!r}")
        return out

    def wait_group_gone(self, signalled_at: float) -> float:
        """Seconds from ``signalled_at`` until no process of the group runs; fails past the
        bound (the service hung) with what is still running and the last log lines."""
        assert self.proc is not None
        while True:
            left = self.running_in_group()
            elapsed = time.monotonic() - signalled_at
            if not left and self.proc.poll() is not None:
                return elapsed
            if elapsed > STOP_BOUND:
                self.kill_group()
                raise AssertionError(
                    f"still running {STOP_BOUND:.0f} s after the signal: {left}\n"
                    + "\n".join(self.lines[-10:])
                )
            time.sleep(0.05)  # polling a real process, bounded by STOP_BOUND

    def kill_group(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc is not None:
            self.proc.wait(STOP_BOUND)


@pytest.fixture
def group_service(tmp_path: Path) -> Any:
    made: list[GroupService] = []

    def make(inbox: str) -> GroupService:
        made.append(GroupService(tmp_path, inbox))
        return made[-1]

    yield make
    for s in made:
        if s.proc is not None and s.proc.poll() is None:
            s.kill_group()


@pytest.fixture
def gateway() -> Any:
    g = HeldGateway()
    yield g
    g.close()


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.mark.parametrize(
    ("sig", "under_make"),
    [
        pytest.param(signal.SIGTERM, True, id="make-run-group-SIGTERM", marks=needs_make),
        pytest.param(signal.SIGTERM, False, id="systemd-group-SIGTERM"),
        pytest.param(signal.SIGINT, False, id="terminal-Ctrl-C"),
    ],
)
def test_a_signal_to_the_whole_group_stops_it_within_a_bound(
    group_service: Any, gateway: HeldGateway, sig: signal.Signals, under_make: bool
) -> None:
    """The tester's set-up: messages sent to a gateway, then the signal to the whole process
    group.  Under ``make run`` the service gets SIGTERM twice (make forwards its own); while a
    send is in flight the stop lasts long enough for the second to land in it, and it used to
    hang for ever (7 of 8 runs; with nothing in flight, when the machine was busy).  Every way
    must end with "responder stopped", the send recorded, and no process of the group left,
    within the bound."""
    svc = group_service(gateway.address)
    token = svc.token()
    svc.start_in_group(under_make=under_make)
    declare(svc, token)
    gateway.wait_for(lambda: gateway.received, "a message to be held by the gateway")

    first = len(svc.lines)
    signalled_at = time.monotonic()
    os.killpg(svc.pgid, sig)
    svc.wait_logged("engine stopping: waiting for", first)
    gateway.release.set()
    elapsed = svc.wait_group_gone(signalled_at)
    assert svc.logged("responder stopped", first), "\n".join(svc.lines[-10:])
    if not under_make:  # make reports its own death by the signal it received
        assert svc.proc is not None and svc.proc.returncode == 0
    done = statuses(svc.db)
    assert "sending" not in done and done.get("sent", 0) >= len(gateway.answered) >= 1, done
    print(f"stopped {elapsed:.2f} s after the signal")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_second_signal_while_stopping_does_not_cut_the_stop_short(
    group_service: Any, gateway: HeldGateway, sig: signal.Signals
) -> None:
    """A second signal while the stop waits for a send in flight (Ctrl-C pressed again; make
    forwarding the group's SIGTERM): the stop goes on, the send is recorded, the process exits
    0.  It used to cancel the clean-up and hang for ever."""
    svc = group_service(gateway.address)
    token = svc.token()
    svc.start_in_group()
    declare(svc, token)
    gateway.wait_for(lambda: gateway.received, "a message to be held by the gateway")

    first = len(svc.lines)
    signalled_at = time.monotonic()
    os.killpg(svc.pgid, sig)
    svc.wait_logged("engine stopping: waiting for", first)
    assert svc.proc is not None and svc.proc.poll() is None  # it waits for the held send
    os.kill(svc.proc.pid, sig)
    svc.wait_logged("already stopping", first)
    gateway.release.set()
    svc.wait_group_gone(signalled_at)
    assert svc.proc.returncode == 0, "\n".join(svc.lines[-10:])
    assert svc.logged("responder stopped", first)
    assert "sending" not in statuses(svc.db)  # the held send was recorded, not cut
