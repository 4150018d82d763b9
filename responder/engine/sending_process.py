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
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.util
import os
import select
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from responder.engine.apprise_call import Outcome, send
from responder.engine.failures import SEND_TIMED_OUT, SENDER_DIED, SENDER_STOPPED

log = logging.getLogger("responder.dispatcher")
_CONTEXT = multiprocessing.get_context("forkserver")  # no fork() of a threaded process
_CONTEXT.set_forkserver_preload(["responder.engine.apprise_call"])  # apprise is imported once


CLOSE_GRACE = 5.0  # seconds the child waits on a graceful close for sends still running


def _child(conn: Connection) -> None:
    """The child's main loop (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, OSError):  # Linux: see the module docstring
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
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


class Sender:
    """The parent's side: one child process, started by :meth:`start` or the first send."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout  # seconds, after which a send is given up on
        self._process: Any = None
        self._conn: Connection | None = None
        self._pending: dict[int, asyncio.Future[Outcome]] = {}
        self._keys = itertools.count()
        self._starting = asyncio.Lock()
        self._finalizers: list[multiprocessing.util.Finalize] = []

    async def start(self) -> None:
        """Start the child if it is not running.  The first start in a process also starts
        multiprocessing's fork server (~0.5 s, it imports apprise): off the event loop."""
        async with self._starting:
            if self._conn is not None:
                return
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
                args=(child,),
                name="responder-send",
                daemon=True,
            )
            await asyncio.to_thread(process.start)
            child.close()
            self._process, self._conn = process, parent
            asyncio.get_running_loop().add_reader(parent.fileno(), self._on_reply)

    async def send(self, url: str, title: str, body: str, kind: str) -> Outcome:
        """Have the child send one message; return when that send has finished, or when it
        is given up on after ``timeout`` seconds (see the module docstring)."""
        await self.start()
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
