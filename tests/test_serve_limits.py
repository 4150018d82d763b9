"""What a hostile client can make the service spend (issue 14, findings 5 and 6).

* Compressed bodies: a real ``responder serve`` process is sent gzip bodies that inflate to a
  gigabyte each, on routes that need no credentials; the CPU time the process spends on them
  is read from /proc.
* Connections: a real process with a low limit on open files is sent more half-open
  connections than it can hold; ``/healthz`` must still answer and the log stay short.  The
  guard's rules one by one (the header deadline, making room, 503 when every connection is
  busy) against the app served by the same code on 127.0.0.1, with a small limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from functools import cache
from typing import Any

import pytest

from responder.clock import FakeClock
from responder.config import Config
from responder.web.app import create_app
from responder.web.server import (
    ACCEPT_FAILED,
    HANDLER,
    Throttled,
    accept_failures,
    listen,
)
from tests.sinks import free_port
from tests.test_serve import LIMIT, Service, call
from tests.web_helpers import SECRET

if not os.path.exists("/proc/self/stat"):
    pytest.skip("reads a process's CPU time from /proc", allow_module_level=True)


@pytest.fixture
def service(tmp_path: Any) -> Iterator[Service]:
    svc = Service(tmp_path)
    try:
        yield svc
    finally:
        svc.kill()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- 5. compressed bodies -------------------------------------------------------------------


@cache
def gzip_bomb() -> bytes:
    """About 1 MB of gzip that inflates to 1 GiB of zeros: sixteen members of 64 MiB each (a
    gzip body may hold several; aiohttp inflated them all)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    member = b"".join([packer.compress(zeros) for _ in range(64)] + [packer.flush()])
    return member * 16


def post_raw(port: int, path: str, body: bytes, content_type: str, coding: str = "gzip") -> bytes:
    """POST ``body`` as a client that sends it whole before reading the answer (as curl does):
    returns the answer's status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=LIMIT) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        try:
            s.sendall(body)
        except OSError:  # answered and closed before the whole body was taken
            pass
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer.split(b"\r\n", 1)[0]


def test_compressed_bodies_cost_nothing_where_no_route_takes_them(service: Service) -> None:
    """Four bodies of 1 MB inflating to 1 GiB each, at once, without credentials: aiohttp
    inflated each while draining it, 11.5 s of CPU, and /healthz took 7 s to answer.  Now only
    the API inflates, after authentication, up to 256 KiB.  And br, which aiohttp refused
    itself before the service saw the request (a plain-text 400), is the API's 415."""
    token = service.token()
    service.start()
    bomb = gzip_bomb()
    routes = {
        "/ack/AbCdEfGhIjKlMnOpQrSt_-": ("application/x-www-form-urlencoded", b"415"),
        "/login": ("application/x-www-form-urlencoded", b"415"),
        "/dev/inbox/sms": ("application/json", b"415"),
        "/api/v1/incidents": ("application/json", b"401"),
    }
    answers: dict[str, bytes] = {}
    before = cpu_seconds(service.proc.pid)  # type: ignore[union-attr]
    senders = [
        threading.Thread(
            target=lambda p=path, t=ctype: answers.__setitem__(
                p, post_raw(service.port, p, bomb, t)
            )
        )
        for path, (ctype, _) in routes.items()
    ]
    for sender in senders:
        sender.start()
    started = time.monotonic()
    status, _, _ = call(service.base + "/healthz")
    healthz = time.monotonic() - started
    for sender in senders:
        sender.join(LIMIT)
    spent = cpu_seconds(service.proc.pid) - before  # type: ignore[union-attr]
    assert {path: answers.get(path, b"").split(b" ")[1:2] for path in routes} == {
        path: [expected] for path, (_, expected) in routes.items()
    }
    assert status in (200, 503)
    assert spent < 1.0, f"{spent:.2f} s of CPU on four compressed bodies"
    assert healthz < 2.0, f"/healthz answered after {healthz:.2f} s"

    status, headers, body = call(
        service.base + "/api/v1/incidents",
        "POST",
        b"\x0b\x02\x80{}\x03",
        {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Content-Encoding": "br",
        },
    )
    assert status == 415 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"] == "unsupported_encoding"


# -- 6. a flood of connections ---------------------------------------------------------------

OPEN_FILES = 256  # the service's limit on open files in the flood test
FLOOD = 400  # half-open connections: more than such a process can hold


def _room_for(sockets: int) -> None:
    """This test process must be able to hold ``sockets`` of its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sockets + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"this process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def test_a_flood_of_half_open_connections_leaves_healthz_answering(service: Service) -> None:
    """20,000 half-open connections exhausted the file descriptors: /healthz stopped
    answering, and asyncio logged "socket.accept() out of system resource" 116,351 times.
    The same with a limit of 256 open files and 400 connections: at most 64 are kept (the
    limit, less what the process needs and a burst of accepts), the one waiting longest is
    closed for each new one, and each kind of event is one line."""
    _room_for(FLOOD)
    service.start(open_files=OPEN_FILES)
    started = len(service.lines)
    flood: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", service.port))
            except OSError:  # the backlog is full: the service no longer accepts
                s.close()
                break
            flood.append(s)
        sent = time.monotonic()
        status, _, _ = call(service.base + "/healthz")
        assert status in (200, 503)
        assert time.monotonic() - sent < 5.0
        assert len(flood) == FLOOD
        assert flood[0].recv(1) == b""  # the first was closed to make room
    finally:
        for s in flood:
            s.close()
    service.wait_logged('"path": "/healthz"', started)
    during = [json.loads(line) for line in service.lines[started:]]
    assert not [x for x in during if x["logger"] == "asyncio"]  # was 116,351 lines a minute
    guard = {x["message"].split(" / ")[1] for x in during if x["logger"] == "responder.server"}
    # One line for making room; and when a burst of connections came faster than room was
    # made (asyncio accepts up to the backlog at once, twice before the first is admitted),
    # one line for the accepts that failed.
    assert (
        "64 connections open (service.max_connections): closed the one waiting longest"
        " without a request" in guard
    )
    assert guard <= {
        "64 connections open (service.max_connections): closed the one waiting longest"
        " without a request",
        "cannot accept connections: [Errno 24] Too many open files (out of file descriptors)",
    }, guard
    assert len(during) < 10, during
    startup = [json.loads(line) for line in service.lines[:started]]
    assert any(
        "the limit on open files is 256 (ulimit -n): at most 64 connections" in x["message"]
        for x in startup
    )


# -- the guard's rules, on 127.0.0.1 with a small limit -------------------------------------


@pytest.fixture
async def guarded(cfg: Config, clock: FakeClock) -> AsyncIterator[tuple[int, list[str]]]:
    """The app served as ``responder serve`` serves it, at most 8 connections, 1 s for a
    request's head; yields the port and the guard's log lines."""
    from aiohttp import web

    cfg.service.host = "127.0.0.1"
    cfg.service.port = free_port()
    cfg.service.max_connections = 8
    cfg.service.header_timeout = timedelta(seconds=1)
    lines: list[str] = []
    report = Throttled(_logger(lines))
    runner = web.AppRunner(create_app(cfg, clock=clock, secret=SECRET, run_engine=False), **HANDLER)
    await runner.setup()
    server = await listen(runner, cfg, report)
    try:
        yield cfg.service.port, lines
    finally:
        server.close()
        await runner.cleanup()


class _Kept(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _logger(lines: list[str]) -> logging.Logger:
    """A logger of its own that keeps each message it is given in ``lines``."""
    log = logging.Logger(f"guard-{id(lines)}")  # not in the logging tree: nothing else sees it
    log.addHandler(_Kept(lines))
    return log


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the service closes this connection (within the test's patience)."""
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except (ConnectionResetError, TimeoutError):
        return True


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """GET /healthz on a kept-alive connection; the answer's status line."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
                 .split(b":")[1])  # fmt: skip
    await reader.readexactly(length)
    return head.split(b"\r\n", 1)[0]


async def test_a_connection_must_send_its_request_head_in_time(
    guarded: tuple[int, list[str]],
) -> None:
    port, lines = guarded
    silent = await _connect(port)
    partial = await _connect(port)
    partial[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # a byte at a time…
    prompt = await _connect(port)
    assert (await _get(*prompt)).split(b" ")[1] in (b"200", b"503")
    assert await _closed(silent[0]) and await _closed(partial[0])
    assert (await _get(*prompt)).split(b" ")[1] in (b"200", b"503")  # a request in time stays
    assert lines == [
        "连接在 1 秒内未发送完请求头,已关闭 / closed a connection that sent no complete request"
        " head within 1 s"
    ]  # two closed: one line
    for _, w in (silent, partial, prompt):
        w.close()


async def test_at_the_limit_the_longest_idle_connection_makes_room(
    guarded: tuple[int, list[str]],
) -> None:
    port, lines = guarded
    idle = [await _connect(port) for _ in range(8)]
    late = await _connect(port)  # accepted after them: the backlog keeps their order
    assert (await _get(*late)).split(b" ")[1] in (b"200", b"503")
    assert await _closed(idle[0][0])
    assert len(lines) == 1 and "closed the one waiting longest without a request" in lines[0]
    for _, w in [*idle, late]:
        w.close()


async def test_when_every_connection_is_busy_a_new_one_is_answered_503(
    guarded: tuple[int, list[str]],
) -> None:
    port, lines = guarded
    busy = [await _connect(port) for _ in range(8)]
    for conn in busy:  # each has sent a request and keeps its connection
        assert (await _get(*conn)).split(b" ")[1] in (b"200", b"503")
    reader, writer = await _connect(port)
    answer = await asyncio.wait_for(reader.read(), 10)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in head
    assert json.loads(body)["error"] == "overloaded"
    assert "503" in lines[-1]
    for _, w in [*busy, (reader, writer)]:
        w.close()


def test_a_failed_accept_is_one_line_per_interval() -> None:
    """asyncio reports every accept that finds no file descriptor, up to the backlog each
    time it retries: one line a minute instead, with how many there were."""
    now = [0.0]
    lines: list[str] = []
    report = Throttled(_logger(lines), interval=60.0, clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(accept_failures(report))
        failed = {"message": ACCEPT_FAILED, "exception": OSError(24, "Too many open files")}
        for _ in range(10_000):
            loop.call_exception_handler(failed)
        now[0] = 59.0
        loop.call_exception_handler(failed)
        assert len(lines) == 1 and "cannot accept connections" in lines[0]
        now[0] = 61.0
        loop.call_exception_handler(failed)
        assert len(lines) == 2 and "10000 more in the 60 s" in lines[1]
    finally:
        loop.close()
