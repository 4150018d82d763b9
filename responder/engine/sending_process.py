"""The sending process: apprise runs in a child process, never in the service's own.

Why: apprise and the HTTP and mail libraries under it cost ~1.5 ms of interpreter time per
message.  In the service's process that time is taken from the API, the scheduler and the
database writer, which share one interpreter lock: at 200 declarations/s, with the engine
sending what they set off, a declaration waited ~90 ms (p99) instead of ~7.  In a child process
the sends use the other core.  On Linux the child is ``SCHED_BATCH``: the same share of the CPU
as any program, but a waking service is not kept waiting behind it.  Not a lower priority: at
nice 10 or 19 the sends starved while other programs kept both cores busy, and alerts must not
wait for a quiet machine.

How:

1. :meth:`Sender.send` writes ``(key, url, title, body, kind)`` to the child over a pipe and
   returns a future; the child runs each request in a thread of its own (slow gateways are
   waited for in parallel; the dispatcher bounds how many at once) and writes back
   ``(key, Outcome)`` when that send has finished.
2. The event loop reads the replies as they come (``add_reader``) and resolves the futures.
   A send still running after ``timeout`` seconds (a gateway answering a byte at a time:
   every read is within the plugin's socket timeout, so nothing else ends it) is given up on:
   its outcome says so and forbids the same channel again (the gateway may still be taking
   the message), its thread runs on in the child, and its late reply is dropped.  Without
   this, a few such sends would hold every sending slot and stop all alerts.
3. If the child dies, every send it held ends as a failed try ("the sending process stopped"),
   which the dispatcher retries like any other; the next send starts a new child.  A send is
   never retried while the child that runs it may still be running it.
4. If the service dies (kill -9), the child exits at once, taking the sends it held with it —
   as threads in the service's own process would have died.  It notices the hang-up before
   reading each request, not only at end-of-file: the requests the service wrote just before
   it died are still in the pipe, and started they would reach the gateway after the service's
   death and go out again after its restart.  On a graceful stop the dispatcher first waits
   for the sends in flight, then :meth:`close`.

The child ignores SIGINT, SIGTERM and SIGHUP: Ctrl-C in a terminal (or the terminal closing)
reaches the whole process group, and the service, not the child, decides when sending stops.

Starting (:meth:`Sender.start`), before the first message:

1. The fork server (multiprocessing's, which the children are forked from) is started with
   ``PYTHONSAFEPATH=1``.  It is started as ``python -c …``, which puts the working directory
   first on its ``sys.path`` (Python 3.11's fork server ignores the ``sys_path`` it is given),
   and its preload of this package swallows an ImportError: started from a directory holding a
   ``responder/`` folder (the parent of a checkout), it imported that folder as ``responder``,
   and every child forked from it failed as it re-ran the service's main module
   (``cannot import name '__version__'``) — every send, while the API kept answering.
2. The fork server loads apprise with its plugins once (apprise loads them on the first
   ``add()``: ~150–750 ms taken from the first message after every start), and its children
   skip re-running the service's main module (:mod:`.sending_preload`).  The child checks that
   the ``responder`` it runs is the service's own, warms up in turn (plugins loaded if they are
   not, one post to a throwaway server of its own: a first send in a process just forked was
   ~10 ms slower than the next), and only then says it is ready.
3. A child that cannot get ready (it exits, or runs another package) is stopped; the reason is
   :attr:`Sender.problem` (``/healthz`` shows it), and the next start is tried after
   :data:`RESTART_PAUSE` seconds.  Meanwhile the dispatcher claims nothing: messages wait
   queued instead of being spent on a process that cannot send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import select
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import responder
from responder.engine.apprise_call import Outcome, send, warm_up
from responder.engine.failures import SEND_TIMED_OUT, SENDER_DIED, SENDER_NOT_READY, SENDER_STOPPED

log = logging.getLogger("responder.dispatcher")
_CONTEXT = multiprocessing.get_context("forkserver")  # no fork() of a threaded process
# apprise, its plugins loaded, imported once; the children skip the main module (see there).
_CONTEXT.set_forkserver_preload(["responder.engine.sending_preload"])
_FORKSERVER_START = threading.Lock()  # one start at a time changes the environment

CLOSE_GRACE = 5.0  # seconds the child waits on a graceful close for sends still running
READY_TIMEOUT = 60.0  # seconds a starting child has to say it is ready (a loaded machine)
RESTART_PAUSE = 5.0  # seconds between starts of a child that could not get ready
# The package directory of the service's own ``responder``: the child must run the same.
PACKAGE = os.path.dirname(os.path.abspath(responder.__file__))


class SenderUnavailable(Exception):
    """The sending process cannot be started: ``args`` = (English, 中文)."""


def _start_forkserver() -> None:
    """Start multiprocessing's fork server, if it is not running, without the working
    directory on its ``sys.path`` (see the module docstring, step 1)."""
    with _FORKSERVER_START:
        saved = os.environ.get("PYTHONSAFEPATH")
        os.environ["PYTHONSAFEPATH"] = "1"
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            if saved is None:
                del os.environ["PYTHONSAFEPATH"]
            else:
                os.environ["PYTHONSAFEPATH"] = saved


def _not_ours(package: str) -> tuple[str, str] | None:
    """Why this process cannot send for the service whose package is at ``package``."""
    mine = sys.modules.get("responder")
    where = os.path.dirname(os.path.abspath(getattr(mine, "__file__", None) or "?"))
    if where == package:
        return None
    return (
        f"it imported another 'responder' package ({where}), not the service's ({package});"
        " start the service from another directory",
        f"发送进程载入了另一个 responder 包({where}),而不是本服务的({package});"
        "请换一个目录启动服务",
    )


def _child(conn: Connection, package: str = PACKAGE) -> None:
    """The child: get ready (see the module docstring, step 2), then the main loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, OSError):  # Linux: see the module docstring
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    wrong = _not_ours(package)
    try:
        conn.send(("ready", warm_up()) if wrong is None else ("broken", wrong))
    except OSError:
        os._exit(0)  # the service is gone already
    if wrong is not None:
        os._exit(1)
    _serve(conn)


def _serve(conn: Connection) -> None:
    """The child's main loop (see the module docstring)."""
    replies = threading.Lock()

    def run(key: int, url: str, title: str, body: str, kind: str) -> None:
        outcome = send(url, title, body, kind)
        with replies, contextlib.suppress(OSError):
            conn.send((key, outcome))

    # A thread per send, not a pool: a send given up on keeps its thread, and must not keep
    # the next message waiting for a free one.
    running: list[threading.Thread] = []
    while True:
        try:
            if _hung_up(conn):  # before end-of-file, while its last requests wait unread
                os._exit(0)  # the service is gone: nobody would record what we send
            request = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        if request is None:  # a graceful close: the service waited for its sends already
            ends = time.monotonic() + CLOSE_GRACE
            for thread in running:  # only those given up on should still be running
                thread.join(max(0.0, ends - time.monotonic()))
            return
        running = [t for t in running if t.is_alive()]
        thread = threading.Thread(target=run, args=request, name="send", daemon=True)
        thread.start()
        running.append(thread)


def _hung_up(conn: Connection) -> bool:
    """Whether the service's end of the pipe is closed (it died), even with requests it wrote
    before still unread: the socket reports the hang-up at once, end-of-file only after them."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _await_ready(conn: Connection, process: Any) -> tuple[str, str] | None:
    """Wait (in a thread) for a starting child to say it is ready; why not, if it is not."""
    if not conn.poll(READY_TIMEOUT):
        return (
            f"it did not get ready within {READY_TIMEOUT:.0f} s",
            f"发送进程在 {READY_TIMEOUT:.0f} 秒内未能就绪",
        )
    try:
        what, detail = conn.recv()
    except (EOFError, OSError):  # it died first: its traceback went to the service's stderr
        process.join(5)
        return (
            f"it exited as it started (exit code {process.exitcode}); its error is in the"
            " service's log",
            f"发送进程一启动即退出(退出码 {process.exitcode}),错误见服务日志",
        )
    if what != "ready":
        return (str(detail[0]), str(detail[1]))
    log.debug("the sending process is ready: apprise's %d plugins loaded in %.0f ms", *detail)
    return None


def _discard(conn: Connection, process: Any) -> None:
    """Stop a child that will not be used, and close our end of its pipe."""
    conn.close()
    if getattr(process, "_popen", None) is not None and process.is_alive():
        process.kill()
        process.join(1)


class Sender:
    """The parent's side: one child process, started by :meth:`start` or the first send."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout  # seconds, after which a send is given up on
        # Why the child cannot send (English, 中文), from its last start; None when it can.
        self.problem: tuple[str, str] | None = None
        self._retry_after = 0.0  # monotonic time before which a failed start is not retried
        self._process: Any = None
        self._conn: Connection | None = None
        self._pending: dict[int, asyncio.Future[Outcome]] = {}
        self._keys = itertools.count()
        self._starting = asyncio.Lock()
        self._finalizers: list[multiprocessing.util.Finalize] = []

    @property
    def ready(self) -> bool:
        """Whether a child is running and ready to send."""
        return self._conn is not None

    async def start(self) -> None:
        """Start the child if it is not running, and return once it is ready to send (see
        the module docstring: "Starting").  The first start in a process also starts the
        fork server (~0.5 s, it imports apprise): off the event loop, like the wait.

        Raises :class:`SenderUnavailable` when the child cannot get ready."""
        async with self._starting:
            if self._conn is not None:
                return
            if self.problem is not None and time.monotonic() < self._retry_after:
                raise SenderUnavailable(*self.problem)
            parent, child = _CONTEXT.Pipe()
            # However this Sender ends — closed, dropped, or a start cut short by cancellation
            # before it was recorded — its pipe is closed at the latest when the interpreter
            # exits, before multiprocessing joins its children: the child reads end-of-file
            # and exits.  Otherwise the child (it ignores the SIGTERM multiprocessing sends)
            # would wait for a request for ever, and the exit would wait for the child.
            self._finalizers.append(
                multiprocessing.util.Finalize(self, parent.close, exitpriority=100)
            )
            process = _CONTEXT.Process(
                target=_child,
                args=(child, PACKAGE),
                name="responder-send",
                daemon=True,
            )
            try:
                await asyncio.to_thread(_start_forkserver)
                await asyncio.to_thread(process.start)
                child.close()
                problem = await asyncio.to_thread(_await_ready, parent, process)
            except asyncio.CancelledError:  # a stop during the start: leave no child
                child.close()
                _discard(parent, process)
                raise
            except Exception as e:  # no process to be had (out of memory, of processes …)
                child.close()
                problem = (
                    f"it could not be started: {type(e).__name__}: {e}",
                    f"发送进程无法启动:{type(e).__name__}: {e}",
                )
            if problem is not None:
                _discard(parent, process)
                self.problem, self._retry_after = problem, time.monotonic() + RESTART_PAUSE
                log.error("the sending process cannot send: %s", problem[0])
                raise SenderUnavailable(*problem)
            if self.problem is not None:
                log.warning("the sending process is ready again")
            self.problem = None
            self._process, self._conn = process, parent
            asyncio.get_running_loop().add_reader(parent.fileno(), self._on_reply)

    async def send(self, url: str, title: str, body: str, kind: str) -> Outcome:
        """Have the child send one message; return when that send has finished, or when it
        is given up on after ``timeout`` seconds (see the module docstring)."""
        try:
            await self.start()
        except SenderUnavailable as e:  # nothing was sent: the same channel may be tried again
            return Outcome(False, f"{SENDER_NOT_READY}{e.args[0]}")
        assert self._conn is not None
        key = next(self._keys)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            self._conn.send((key, url, title, body, kind))
        except OSError:  # the child died since
            self._lost()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            self._pending.pop(key, None)  # its reply, if it ever comes, is dropped
            log.warning("a send took longer than %.0f s: given up on", self.timeout)
            error = f"{SEND_TIMED_OUT}{self.timeout:.0f} s"
            return Outcome(False, error, self.timeout, same_channel_again=False)

    def _on_reply(self) -> None:
        assert self._conn is not None
        try:
            while self._conn.poll():
                key, outcome = self._conn.recv()
                future = self._pending.pop(key, None)
                if future is not None and not future.done():
                    future.set_result(outcome)
        except (EOFError, OSError):
            self._lost()

    def _lost(self) -> None:
        """The child is gone: what it held ends as failed tries; the next send starts anew."""
        if self._conn is not None:
            asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None
        self._run_finalizers()
        if self._pending:
            log.error("the sending process stopped with %d sends in flight", len(self._pending))
        self._fail_pending(SENDER_DIED)
        if self._process is not None:
            self._process.join(timeout=0)
            self._process = None

    async def close(self, grace: float = 10.0) -> None:
        """Stop the child after the sends it holds (the dispatcher has waited for them)."""
        if self._conn is None:
            return
        conn, process = self._conn, self._process
        with contextlib.suppress(OSError):
            conn.send(None)
        asyncio.get_running_loop().remove_reader(conn.fileno())
        await asyncio.to_thread(process.join, grace)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, grace)
        conn.close()
        self._conn = self._process = None
        self._run_finalizers()
        self._fail_pending(SENDER_STOPPED)

    def _run_finalizers(self) -> None:
        """Close the pipes now rather than at exit (closing one twice is harmless)."""
        for finalizer in self._finalizers:
            finalizer()
        self._finalizers.clear()

    def _fail_pending(self, error: str) -> None:
        """End every send still waiting for a reply as a failed try (the dispatcher retries)."""
        for future in self._pending.values():
            if not future.done():
                future.set_result(Outcome(False, error))
        self._pending.clear()
