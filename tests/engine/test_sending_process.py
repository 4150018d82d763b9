"""The sending process (:mod:`responder.engine.sending_process`) and requests-first
(:mod:`responder.engine.foreground`).

apprise runs in a child process.  What must hold: a child that dies mid-send turns that send
into a failed try that is retried (never lost, never left 'sending'); Ctrl-C reaching the child
does not cut a send short; a stopped engine leaves no child behind.  The kill -9 of the whole
service is in ``test_failing_channels_crashes_and_stops.py``.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import apprise
import pytest

from responder.clock import FakeClock
from responder.config import Config
from responder.engine.apprise_call import with_read_timeout
from responder.engine.failures import SENDER_DIED, explain
from responder.engine.foreground import Foreground
from responder.engine.runner import Engine
from responder.store import Database
from tests.engine_helpers import SECRET, attempts, drive, notification, queue, settle, wire
from tests.sinks import HttpSink

pytest_plugins = ["tests.engine_fixtures"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def slow_sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(delay=0.4) as sink:
        yield sink


@pytest.fixture
def wired(cfg: Config, slow_sink: HttpSink) -> Config:
    """The ``engine`` fixture's config: channels at the slow sink (only sms is used here)."""
    return wire(cfg, slow_sink.port, 9)


def _child_pid(engine: Engine) -> int:
    process = engine.dispatcher.sender._process
    assert process is not None and process.is_alive()
    return int(process.pid)


async def test_a_child_that_dies_mid_send_is_a_failed_try_and_the_message_is_retried(
    engine: Engine, db: Database, clock: FakeClock, slow_sink: HttpSink
) -> None:
    nid = await queue(db, clock.now(), "wang-fang", ["sms"])
    engine.dispatcher.wake()
    await slow_sink.wait_for(1)  # the send is in flight, held by the sink
    first_child = _child_pid(engine)
    os.kill(first_child, signal.SIGKILL)
    await settle(engine)
    row = await notification(db, nid)
    assert (row["status"], row["attempt"]) == ("queued", 1)  # a failed try, queued again
    [attempt] = await attempts(db, nid)
    assert attempt["outcome"] == "error"
    assert attempt["error"] == SENDER_DIED
    assert explain(attempt["error"])[0] == "发送进程意外中断,已按设定重试"

    row = await drive(engine, nid)  # the retry starts a new child, which sends it
    assert (row["status"], row["sent_channel"]) == ("sent", "sms")
    assert _child_pid(engine) != first_child
    assert [a["outcome"] for a in await attempts(db, nid)] == ["error", "sent"]
    # The gateway saw it twice (the first child died after posting): with the same key, so
    # a gateway that honours X-Responder-Notification drops the second.
    await slow_sink.wait_for(2)
    keys = {r.headers["X-Responder-Notification"] for r in slow_sink.requests}
    assert keys == {f"{nid}-sms"}


async def test_ctrl_c_reaching_the_child_does_not_cut_a_send_short(
    engine: Engine, db: Database, clock: FakeClock, slow_sink: HttpSink
) -> None:
    nid = await queue(db, clock.now(), "wang-fang", ["sms"])
    engine.dispatcher.wake()
    await slow_sink.wait_for(1)
    child = _child_pid(engine)
    os.kill(child, signal.SIGINT)  # a terminal's Ctrl-C goes to the whole process group
    os.kill(child, signal.SIGTERM)
    await settle(engine)
    row = await notification(db, nid)
    assert row["status"] == "sent"
    assert [a["outcome"] for a in await attempts(db, nid)] == ["sent"]
    assert _child_pid(engine) == child and len(slow_sink.requests) == 1


async def test_a_stopped_engine_leaves_no_sending_process(
    db: Database, cfg: Config, clock: FakeClock, slow_sink: HttpSink
) -> None:
    wire(cfg, slow_sink.port, 9)
    eng = Engine(db, cfg, clock, SECRET)
    await eng.start()
    nid = await queue(db, clock.now(), "wang-fang", ["sms"])
    eng.dispatcher.wake()
    await slow_sink.wait_for(1)
    process = eng.dispatcher.sender._process
    assert process is not None
    await eng.stop()  # waits for the send in flight, then stops the child
    assert not process.is_alive() and process.exitcode == 0
    assert (await notification(db, nid))["status"] == "sent"


def run_script(path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """Run ``text`` as a Python script of its own (from the project's root); it must exit 0."""
    path.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_service_killed_with_requests_still_in_the_pipe_has_none_of_them_sent(
    tmp_path: Path,
) -> None:
    """kill -9 of the service while requests it had written still waited in the pipe (the
    child, at SCHED_BATCH, had not read them yet).  The child used to read and start every one
    of them before it reached end-of-file: they reached the gateway after the service had died,
    and went out again after its restart (a crash loop of ``responder serve`` saw messages
    arrive up to 250 ms after the kill).  It now sees the hang-up first and starts none.

    The child's loop runs in a script of its own, with apprise's send replaced by a note of
    what would have gone out, and its ``os._exit`` by an exception, to count after it ends."""
    done = run_script(
        tmp_path / "child_after_the_service_died.py",
        "import os, threading\n"
        "from multiprocessing import Pipe\n"
        "from responder.engine import sending_process\n"
        "started = []\n"
        "sending_process.send = lambda url, title, body, kind: started.append(url)\n"
        "class Exited(Exception): pass\n"
        "def _exit(code): raise Exited(code)\n"
        "os._exit = _exit\n"
        "parent, child = Pipe()\n"
        "for key in range(3):\n"
        "    parent.send((key, 'json://127.0.0.1:9/sms', 'title', 'body', 'sms'))\n"
        "parent.close()  # the service is killed: the kernel closes its end\n"
        "try:\n"
        "    sending_process._child(child)\n"
        "except Exited as e:\n"
        "    code = e.args[0]\n"
        "for t in threading.enumerate():\n"
        "    if t is not threading.main_thread(): t.join(10)\n"
        "print(code, len(started), flush=True)\n",
    )
    assert done.stdout.split() == ["0", "0"]  # exited, and not one message started


# -- requests first ------------------------------------------------------------------------


async def test_foreground_is_idle_at_once_when_no_request_is_being_answered() -> None:
    fg = Foreground()
    async with asyncio.timeout(5):
        await fg.idle(max_wait=60)


async def test_foreground_waits_for_the_requests_being_answered_then_goes_on() -> None:
    fg = Foreground()
    released = asyncio.Event()

    async def request() -> None:
        with fg.request():
            await released.wait()

    tasks = [asyncio.create_task(request()) for _ in range(2)]
    await asyncio.sleep(0)
    assert fg.serving == 2
    waiter = asyncio.create_task(fg.idle(max_wait=60))
    await asyncio.sleep(0)
    assert not waiter.done()
    released.set()
    async with asyncio.timeout(5):  # well before max_wait: as soon as both requests ended
        await waiter
        await asyncio.gather(*tasks)
    assert fg.serving == 0


async def test_foreground_never_holds_the_dispatcher_longer_than_max_wait() -> None:
    fg = Foreground()
    with fg.request():  # a request that does not end while we wait
        async with asyncio.timeout(5):
            await fg.idle(max_wait=0.01)
        assert fg.serving == 1


def test_every_recorded_error_has_words_for_people() -> None:
    """Each error the service writes itself, and apprise's for the rest, is explained in
    Chinese first; no error, no explanation."""
    from responder.engine import failures

    ours = [failures.INTERRUPTED, failures.SENDER_DIED, failures.SENDER_STOPPED,
            failures.URL_NOT_UNDERSTOOD, failures.NOT_BUILT + "KeyError: 'phone'",
            failures.SEND_TIMED_OUT + "60 s",
            "Sending JSON to 127.0.0.1 failed: HTTP 500 Internal Server Error"]  # fmt: skip
    explained = [failures.explain(e) for e in ours]
    assert len({zh for zh, _ in explained}) == len(ours)  # each its own words
    for zh, en in explained:
        assert zh and en and zh[0] > "\u2e80" and en.isascii()  # Chinese first; English too
    assert failures.explain(None) == failures.explain("") == (None, None)


@pytest.mark.parametrize(
    "url",
    [
        "json://127.0.0.1:9/sms?:to=%2B8613800000001&+X-Responder-Notification=1-sms",
        "mailtos://user:pass@smtp.example.gov.cn?to=a@example.gov.cn",
        "dingtalk://token123456/",
    ],
)
def test_apprise_waits_for_a_slow_gateway_as_long_as_the_send_timeout(url: str) -> None:
    """apprise's own 4 s read timeout reported a slow gateway's send as failed, and the retry
    on the same channel delivered the message twice.  The URL now says how long to wait;
    a channel that sets its own rto keeps it."""
    plugin = apprise.Apprise.instantiate(with_read_timeout(url, 65))
    assert plugin is not None and plugin.socket_read_timeout == 65.0
    own = apprise.Apprise.instantiate(
        with_read_timeout(url + ("&" if "?" in url else "?") + "rto=7", 65)
    )
    assert own is not None and own.socket_read_timeout == 7.0


def test_a_process_exits_even_if_its_sender_was_never_closed(tmp_path: Path) -> None:
    """The sending process ignores SIGTERM, which multiprocessing sends its children at exit
    before waiting for them: a Sender left unclosed (a start cut short by cancellation, a
    test that never closed its engine) made the interpreter's exit wait for ever — a test
    run hung after its last test.  The pipe is now closed first, and the child ends."""
    done = run_script(
        tmp_path / "leave_it_open.py",
        "import asyncio\n"
        "from responder.engine.sending_process import Sender\n"
        "async def main():\n"
        "    sender = Sender(timeout=5)\n"
        "    await sender.start()\n"
        "    print(sender._process.pid, flush=True)\n"
        "    globals()['kept'] = sender  # referenced until the very end\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n",
    )
    child = int(done.stdout.split()[0])
    try:
        handle = os.pidfd_open(child)
    except ProcessLookupError:
        return  # already gone
    try:  # woken when the child ends (no polling), or after 10 s
        ended, _, _ = select.select([handle], [], [], 10)
    finally:
        os.close(handle)
    assert ended, f"the sending process {child} outlived the service"
