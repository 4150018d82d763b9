"""``responder serve``: logging, then run the app until SIGINT / SIGTERM (graceful)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import signal
import socket
import sys
from datetime import UTC, datetime

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
from responder.store.db import make_parent
from responder.store.lock import instance_lock
from responder.web.access import MalformedRequestFilter, RequestIdFilter
from responder.web.app import create_app

# The longest a graceful stop takes: requests being answered (run_app's shutdown_timeout), then
# the engine's sends in flight (STOP_GRACE).  Usually well under a second.
SHUTDOWN_TIMEOUT = 30.0
STOP_BOUND = SHUTDOWN_TIMEOUT + STOP_GRACE


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
    # aiohttp's own access log is off (access_log=None); ours is responder.access, which keeps
    # acknowledgement tokens out of the paths it writes.


def serve(cfg: Config, log_format: str = "text") -> int:
    configure_logging(log_format)
    log = logging.getLogger("responder")
    check_templates()
    bad = channels_not_understood(cfg)
    if bad:  # the others still work, and failover passes over these: warn, do not refuse
        log.warning("%s / %s", *describe_not_understood(bad))
    for zh, en in production_notes(cfg):
        log.warning("%s / %s", zh, en)
    make_parent(cfg.service.database)
    with instance_lock(cfg.service.database):
        app = create_app(cfg)
        loop = asyncio.new_event_loop()
        _stop_on_signals(loop, log)

        def serving(*_: object) -> None:
            # aiohttp calls this once the port is bound: "serving" means connections succeed.
            log.info(
                "responder %s serving on http://%s:%s (database %s, time zone %s)",
                __version__,
                cfg.service.host,
                cfg.service.port,
                cfg.service.database,
                cfg.service.timezone,
            )

        try:
            web.run_app(
                app,
                host=cfg.service.host,
                port=cfg.service.port,
                print=serving,
                shutdown_timeout=SHUTDOWN_TIMEOUT,
                access_log=None,
                handle_signals=False,  # ours, installed on the loop: see _stop_on_signals
                loop=loop,
            )
        except OSError as e:
            why = _UNRESOLVED if isinstance(e, socket.gaierror) else _CANNOT_LISTEN.get(e.errno)
            if why is None:
                raise
            raise _cannot_listen(cfg, why) from None
    log.info("responder stopped")
    return 0


def _stop_on_signals(loop: asyncio.AbstractEventLoop, log: logging.Logger) -> None:
    """SIGTERM, SIGINT (Ctrl-C) and SIGHUP stop the service gracefully, ONCE: sends in flight
    finish and are recorded, then the database closes.  A repeat while it stops is logged and
    otherwise ignored.

    Why not aiohttp's own handlers: each SIGTERM or SIGINT raised GracefulExit, and a second
    one arriving while the service was stopping broke out of the clean-up: the engine's stop
    was cancelled, the database never closed, and the process hung for ever on exit, waiting
    for aiosqlite's thread.  A second signal is common: ``make run`` forwards the SIGTERM
    that ``kill -TERM -- -PGID`` (or systemd, KillMode=control-group) also sends to the
    service itself, and people press Ctrl-C twice.  Arriving together with the first, it cut
    the sends in flight short instead (left ``sending`` until the next start).

    SIGHUP (the terminal or SSH session that started the service closed) stops it as SIGTERM
    does; by default it killed the process at once, and the restart sent every message in
    flight a second time.  Under ``nohup`` (SIGHUP ignored) it is left ignored.

    The handlers live as long as the loop: once it has closed, the stop is over and only the
    exit remains, which a late signal may then cut short by its default action.
    """
    watched = [signal.SIGTERM, signal.SIGINT]
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        watched.append(signal.SIGHUP)  # not under nohup: asked to outlive the terminal
    stopping = False

    def on_signal(sig: signal.Signals) -> None:
        nonlocal stopping
        if stopping:
            log.warning(
                "已在停止中,忽略 %s:正在等待发送中的消息完成并记录(最多约 %.0f 秒)"
                " / already stopping, %s ignored: waiting for the sends in flight to finish"
                " and be recorded (at most about %.0f s)",
                sig.name, STOP_BOUND, sig.name, STOP_BOUND,
            )  # fmt: skip
            return
        stopping = True
        log.info("收到 %s,正在停止 / %s received: stopping", sig.name, sig.name)
        raise web.GracefulExit()  # as aiohttp's own handlers do: run_app then cleans up

    for sig in watched:
        loop.add_signal_handler(sig, on_signal, sig)


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
