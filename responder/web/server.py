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
from responder.config import Config, production_notes
from responder.engine.send import channels_not_understood, describe_not_understood
from responder.errors import ResponderError
from responder.paths import check_templates
from responder.store.db import make_parent
from responder.store.lock import instance_lock
from responder.web.access import MalformedRequestFilter, RequestIdFilter
from responder.web.app import create_app


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
        app.on_startup.append(_stop_on_hangup)

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
                shutdown_timeout=30.0,
                access_log=None,
            )
        except OSError as e:
            why = _UNRESOLVED if isinstance(e, socket.gaierror) else _CANNOT_LISTEN.get(e.errno)
            if why is None:
                raise
            raise _cannot_listen(cfg, why) from None
    log.info("responder stopped")
    return 0


async def _stop_on_hangup(app: web.Application) -> None:
    """SIGHUP (the terminal or SSH session that started the service closed) stops it as
    SIGTERM does: sends in flight finish and are recorded.  By default it killed the process
    at once, and the restart sent every message in flight a second time.  Under ``nohup``
    (SIGHUP ignored) it is left ignored."""

    def stop() -> None:
        raise web.GracefulExit()  # as aiohttp's own SIGINT and SIGTERM handlers do

    if not hasattr(signal, "SIGHUP"):  # POSIX only
        return
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return  # started under nohup: asked to outlive the terminal, so it keeps running
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, stop)


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
