"""``responder serve``: logging, then run the app until SIGINT / SIGTERM (graceful)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from responder import __version__
from responder.checks import (
    channels_not_understood,
    check_templates,
    describe_not_understood,
    production_notes,
)
from responder.config import Config
from responder.engine.runner import STOP_GRACE
from responder.errors import ResponderError
from responder.store import is_postgresql, sqlite_path
from responder.store.db import make_parent
from responder.store.lock import instance_lock
from responder.web.access import MalformedRequestFilter, RequestIdFilter
from responder.web.app import create_app
from responder.web.errors import error_body


class JsonFormatter(logging.Formatter):
    """One JSON object per line.  Messages are written by our code, which never logs secrets."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id  # type: ignore[attr-defined]
        entry.update(getattr(record, "fields", {}))  # the access log's, for querying
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` (the time with its offset, e.g.
    ``2026-11-27T14:03:01.234+08:00``), and ``[id=…]`` for a line logged while answering a
    request (its access line carries the id already)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """RFC 3339 in the host's zone, with its offset: a container's clock is often UTC, and
        a bare "14:03" beside the +08:00 of every page and message was read as local time."""
        at = datetime.fromtimestamp(record.created, UTC).astimezone()
        return at.isoformat(timespec="milliseconds")

    def formatMessage(self, record: logging.LogRecord) -> str:  # before any traceback
        line = super().formatMessage(record)
        rid = getattr(record, "request_id", None)
        return f"{line} [id={rid}]" if rid else line


def configure_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())


# How aiohttp's request handler runs, for ``responder serve`` and for the tests alike.
HANDLER: dict[str, Any] = {
    # aiohttp's own access log is off; ours is responder.access, which keeps acknowledgement
    # tokens out of the paths it writes.
    "access_log": None,
    # aiohttp inflated every compressed body itself, on any route and before any check;
    # responder.web.bodies inflates only the API's, after authentication, up to the limit.
    "auto_decompress": False,
    # An idle connection between requests is closed after this long (as web.run_app had it:
    # longer than a reverse proxy keeps its idle connections to us).
    "keepalive_timeout": 75.0,
}
BACKLOG = 128
SHUTDOWN_TIMEOUT = 30.0  # for requests and sends in flight after SIGTERM
# The longest a graceful stop takes: requests being answered (SHUTDOWN_TIMEOUT), then the
# engine's sends in flight (STOP_GRACE).  Usually well under a second.
STOP_BOUND = SHUTDOWN_TIMEOUT + STOP_GRACE


def serve(cfg: Config, log_format: str = "text") -> int:
    configure_logging(log_format)
    log = logging.getLogger("responder")
    check_templates()
    bad = channels_not_understood(cfg)
    if bad:  # the others still work, and failover passes over these: warn, do not refuse
        log.warning("%s / %s", *describe_not_understood(bad))
    for zh, en in production_notes(cfg):
        log.warning("%s / %s", zh, en)
    with _one_instance(cfg.service.database):
        app = create_app(cfg)

        def serving() -> None:
            # Once the port is bound: "serving" means connections succeed.
            log.info(
                "responder %s serving on http://%s:%s (database %s, time zone %s)",
                __version__,
                cfg.service.host,
                cfg.service.port,
                shown_database(cfg.service.database),
                cfg.service.timezone,
            )

        try:
            asyncio.run(run(app, cfg, serving))
        except OSError as e:
            why = _UNRESOLVED if isinstance(e, socket.gaierror) else _CANNOT_LISTEN.get(e.errno)
            if why is None:
                raise
            raise _cannot_listen(cfg, why) from None
    log.info("responder stopped")
    return 0


def _one_instance(database: str) -> contextlib.AbstractContextManager[object]:
    """On SQLite, one ``serve`` per database file (its lock file, see store.lock).  On
    PostgreSQL any number of replicas share the database: no lock."""
    if is_postgresql(database):
        return contextlib.nullcontext()
    path = sqlite_path(database)
    make_parent(path)
    return instance_lock(path)


def shown_database(database: str) -> str:
    """The database as a log line may show it: a PostgreSQL URL without its password."""
    if is_postgresql(database):
        from responder.store.pg import masked

        return masked(database)
    return database


async def run(app: web.Application, cfg: Config, serving: Callable[[], None]) -> None:
    """Start the app (database, engine), listen, and serve until SIGINT, SIGTERM or SIGHUP;
    then stop gracefully: requests and sends in flight finish and are recorded.

    Instead of ``web.run_app``: the listening socket gets :class:`ConnectionGuard` (a limit
    on connections and a deadline for a request's head), which run_app has no way to take."""
    loop = asyncio.get_running_loop()
    report = Throttled(logging.getLogger("responder.server"))
    loop.set_exception_handler(accept_failures(report))
    stop = asyncio.Event()
    _stop_on_signals(loop, stop)  # before the engine starts, as run_app did
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT, **HANDLER)
    await runner.setup()  # the app's startup: database, engine
    try:
        server = await listen(runner, cfg, report)
        serving()
        await stop.wait()
        server.close()  # no new connections; those open are ended by the runner's cleanup
    finally:
        await runner.cleanup()


async def listen(runner: web.BaseRunner, cfg: Config, report: Throttled) -> asyncio.Server:
    """The listening socket on ``service.host``:``service.port``, each connection guarded."""
    assert runner.server is not None, "runner.setup() first"
    guard = ConnectionGuard(
        runner.server,
        open_files_allow(cfg.service.max_connections, report),
        cfg.service.header_timeout.total_seconds(),
        report,
    )
    return await asyncio.get_running_loop().create_server(
        guard, cfg.service.host, cfg.service.port, backlog=BACKLOG
    )


def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM, SIGINT (Ctrl-C) and SIGHUP stop the service gracefully, ONCE: requests and
    sends in flight finish and are recorded, then the database closes.  A repeat while it
    stops is logged and otherwise ignored.

    A second signal is common: ``make run`` forwards the SIGTERM that ``kill -TERM -- -PGID``
    (or systemd, KillMode=control-group) also sends to the service itself, and people press
    Ctrl-C twice.  With aiohttp's own handlers it broke out of the clean-up: the engine's stop
    was cancelled, the database never closed, and the process hung for ever on exit, waiting
    for aiosqlite's thread.  Here a signal only sets ``stop``; :func:`run` does the rest.

    SIGHUP (the terminal or SSH session that started the service closed) stops it as SIGTERM
    does; by default it killed the process at once, and the restart sent every message in
    flight a second time.  Under ``nohup`` (SIGHUP ignored) it is left ignored: the service
    was asked to outlive the terminal."""
    log = logging.getLogger("responder")

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning(
                "已在停止中,忽略 %s:正在等待发送中的消息完成并记录(最多约 %.0f 秒)"
                " / already stopping, %s ignored: waiting for the sends in flight to finish"
                " and be recorded (at most about %.0f s)",
                sig.name, STOP_BOUND, sig.name, STOP_BOUND,
            )  # fmt: skip
            return
        log.info("收到 %s,正在停止 / %s received: stopping", sig.name, sig.name)
        stop.set()

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:  # POSIX only
            continue
        if sig == getattr(signal, "SIGHUP", None) and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        with contextlib.suppress(NotImplementedError):  # an event loop without signals
            loop.add_signal_handler(sig, on_signal, sig)


# -- connections ------------------------------------------------------------------------------


class Throttled:
    """A warning that may repeat thousands of times a second (every failed accept, every
    connection refused) is written once per ``interval``: the first at once, then at most one
    line per interval saying how many more there were.  A flood of 20,000 connections wrote
    116,351 lines (60 MB) in a minute."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.interval = interval
        self.clock = clock
        self.last: dict[str, float] = {}
        self.unsaid: dict[str, int] = {}

    def __call__(self, kind: str, level: int, zh: str, en: str) -> None:
        now = self.clock()
        if kind in self.last and now - self.last[kind] < self.interval:
            self.unsaid[kind] = self.unsaid.get(kind, 0) + 1
            return
        more = self.unsaid.pop(kind, 0)
        self.last[kind] = now
        if more:
            span = round(self.interval)
            zh += f"(上次记录后 {span} 秒内另有 {more} 次)"
            en += f" ({more} more in the {span} s since the last such line)"
        self.log.log(level, "%s / %s", zh, en)


ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's words, selector_events


def accept_failures(
    report: Throttled,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """asyncio logs a failed accept (no file descriptor left) with a traceback, once per
    connection waiting in the backlog, every second: throttled to one line per minute."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            loop.default_exception_handler(context)
            return
        why = context.get("exception")
        report(
            "accept",
            logging.ERROR,
            f"无法接受新连接:{why}(打开的文件数已达上限)",
            f"cannot accept connections: {why} (out of file descriptors)",
        )

    return handle


# Open files the process needs besides the connections it keeps: the database and its journal,
# the log, the listening socket, the sending process's pipes, the event loop's own (about 20 at
# rest; 64 leaves room), and a burst of connections accepted before any is admitted or made room
# for (asyncio accepts up to the backlog at once).  A flood faster than that may still find no
# file descriptor for a moment: asyncio then stops accepting for a second, and the log says so
# once a minute (accept_failures).
RESERVED_FILES = 64 + BACKLOG


def open_files_allow(wanted: int, report: Throttled) -> int:
    """How many connections the process can hold open: ``wanted``, if the limit on open files
    (raised towards its hard limit when needed) leaves room for it; else what it leaves."""
    try:
        import resource
    except ImportError:  # not POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if raised > soft:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    allowed = max(1, soft - RESERVED_FILES)
    report(
        "open_files",
        logging.WARNING,
        f"打开文件数上限为 {soft}(ulimit -n):最多同时保持 {allowed} 个连接,"
        f"而非 service.max_connections 的 {wanted} 个",
        f"the limit on open files is {soft} (ulimit -n): at most {allowed} connections at"
        f" once, not the {wanted} of service.max_connections",
    )
    return allowed


class ConnectionGuard:
    """The listening socket's protocol factory, around aiohttp's (``runner.server``).

    * At most ``limit`` connections.  At the limit, the connection that has waited longest
      without sending a request is closed to make room: a flood of half-open connections
      cannot shut out a duty officer, whose request follows the connection at once.  When
      every connection is busy with requests, a new one is answered 503 and closed.
    * A connection must send its first request's line and headers within ``header_timeout``
      seconds.  (Between requests, aiohttp closes a connection idle for ``keepalive_timeout``.)
    * What is refused or closed is logged once per interval (:class:`Throttled`), not once
      each.

    "Sent a request" is when aiohttp makes the request object for it: the server's
    ``request_factory`` is wrapped to say so."""

    def __init__(
        self, server: web.Server, limit: int, header_timeout: float, report: Throttled
    ) -> None:
        self.server = server
        self.limit = limit
        self.header_timeout = header_timeout
        self.report = report
        self.open: set[Guarded] = set()
        self.waiting: dict[Guarded, None] = {}  # open and no request yet, oldest first
        self.guarding: dict[asyncio.BaseProtocol, Guarded] = {}  # aiohttp's handler → ours
        make_request = server.request_factory

        def request_arrived(
            message: Any, payload: Any, protocol: Any, writer: Any, task: Any
        ) -> web.BaseRequest:
            guarded = self.guarding.get(protocol)
            if guarded is not None:
                guarded.request_arrived()
            return make_request(message, payload, protocol, writer, task)

        server.request_factory = request_arrived

    def __call__(self) -> Guarded:
        return Guarded(self)

    def admit(self, conn: Guarded) -> bool:
        if len(self.open) >= self.limit:
            oldest = next(iter(self.waiting), None)
            if oldest is None:
                self.report(
                    "refused",
                    logging.WARNING,
                    f"同时连接数已达上限 {self.limit}(service.max_connections),且均在处理请求:"
                    "新连接以 503 拒绝",
                    f"{self.limit} connections open (service.max_connections), all busy with"
                    " requests: a new one was answered 503",
                )
                return False
            self.report(
                "evicted",
                logging.WARNING,
                f"同时连接数已达上限 {self.limit}(service.max_connections):"
                "关闭等待最久、尚未发送请求的连接",
                f"{self.limit} connections open (service.max_connections): closed the one"
                " waiting longest without a request",
            )
            oldest.abort()
        self.open.add(conn)
        self.waiting[conn] = None
        return True

    def forget(self, conn: Guarded) -> None:
        self.open.discard(conn)
        self.waiting.pop(conn, None)
        if conn.handler is not None:
            self.guarding.pop(conn.handler, None)


# Written to a connection over the limit when none can make room; it is then closed.
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)
BUSY_BODY = json.dumps(
    error_body(
        "overloaded",
        "服务器同时处理的连接已满,请稍后再试",
        "the service has as many connections as it takes; try again shortly",
    ),
    ensure_ascii=False,
).encode()


class Guarded(asyncio.Protocol):
    """One connection: aiohttp's request handler inside, and the guard's deadline around it."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.handler: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.guard.admit(self):
            self.transport.write(BUSY % (len(BUSY_BODY), BUSY_BODY))  # type: ignore[union-attr]
            transport.close()
            return
        self.handler = self.guard.server()
        self.guard.guarding[self.handler] = self
        self.deadline = asyncio.get_running_loop().call_later(
            self.guard.header_timeout, self.too_slow
        )
        self.handler.connection_made(transport)

    def request_arrived(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.guard.waiting.pop(self, None)

    def too_slow(self) -> None:
        self.deadline = None
        self.guard.report(
            "header_timeout",
            logging.INFO,
            f"连接在 {self.guard.header_timeout:g} 秒内未发送完请求头,已关闭",
            f"closed a connection that sent no complete request head within"
            f" {self.guard.header_timeout:g} s",
        )
        self.abort()

    def abort(self) -> None:
        """Close at once, and count it closed now (its file descriptor is freed next)."""
        self.guard.forget(self)
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.transport is not None:
            self.transport.abort()

    # asyncio.Protocol: everything else goes to aiohttp's handler.

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.handler is not None:
            self.handler.connection_lost(exc)


_CANNOT_LISTEN = {
    errno.EADDRINUSE: (
        "已被其他程序占用。请用 --port 换一个端口,或停止占用它的程序",
        "is already in use; choose another port with --port, or stop the program using it",
    ),
    errno.EACCES: (
        "无权使用(1024 以下的端口需要特权)。请用 --port 换一个 1024 以上的端口",
        "is not allowed (ports below 1024 need privileges); choose a port above 1024 with --port",
    ),
    errno.EADDRNOTAVAIL: (
        "不属于本机。请用 --host 指定本机的地址,例如 0.0.0.0 或 127.0.0.1",
        "is not an address of this machine; give one of its addresses with --host, e.g. 0.0.0.0"
        " or 127.0.0.1",
    ),
}
_UNRESOLVED = (
    "无法解析(主机名有误)。请用 --host 指定本机的地址,例如 0.0.0.0 或 127.0.0.1",
    "cannot be resolved (a wrong host name); give one of this machine's addresses with --host,"
    " e.g. 0.0.0.0 or 127.0.0.1",
)


def _cannot_listen(cfg: Config, why: tuple[str, str]) -> ResponderError:
    """The port could not be bound: one line saying which and what to do, not a traceback."""
    where = f"{cfg.service.host}:{cfg.service.port}"
    return ResponderError(
        "cannot_listen",
        f"无法在 {where} 上提供服务:该地址{why[0]}",
        f"cannot serve on {where}: the address {why[1]}",
    )
