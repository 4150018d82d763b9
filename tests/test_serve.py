"""``responder serve`` as an administrator runs it: a real process on a real port, the example
config, a SQLite file, JSON logs on stderr, SIGTERM or kill -9 to stop it.

What it proves: one JSON object per log line; one access line per request with its id, user,
status and client; refusals stand out as warnings; no bearer token, password, server secret or
acknowledgement token is ever written; SIGTERM lets the sends in flight finish, keeps the rest
queued and exits 0; after kill -9 nothing is lost and a message cut short goes out again with
the same key.

The clock is the real one (it is a real process), but nothing here waits for time to pass:
every wait is for something the service does — a log line it writes (read as it comes), a
message reaching the test's gateway — with a generous limit only so that a hang fails.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from responder.config import load as load_config
from responder.secret import ack_token
from responder.web.access import CURRENT, RequestIdFilter
from responder.web.server import TextFormatter
from tests.conftest import CONFIG_PATH
from tests.sinks import free_port

SERVER_SECRET = "serve-test-secret-never-logged-7f3a"
PASSWORD = "a long and secret password 42"
WRONG_PASSWORD = "almost-the-password-43"
CST = timezone(timedelta(hours=8))
LIMIT = 60.0  # seconds: only a hung service takes this long


def responder(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "responder.cli", "--config", str(CONFIG_PATH), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )


def call(
    url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None
    headers = dict(headers or {})
    if isinstance(body, bytes):
        data = body
    elif body is not None:
        data = json.dumps(body, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=LIMIT) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Watched:
    """Something that changes in another thread, and a condition to wait for a change on."""

    def __init__(self) -> None:
        self.changed = threading.Condition()

    def wait_for(self, check: Callable[[], Any], what: str) -> Any:
        with self.changed:
            if not self.changed.wait_for(check, timeout=LIMIT):
                raise AssertionError(f"gave up waiting for {what}")
            return check()

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()


class Service(Watched):
    """``responder serve`` in a child process on the example config (what ``make run`` runs),
    its stderr read line by line as it comes (so a full pipe never blocks it)."""

    def __init__(self, tmp_path: Path, inbox: str | None = None) -> None:
        super().__init__()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = tmp_path / "responder.sqlite3"
        self.cwd = tmp_path
        self.env = {
            **os.environ,
            "RESPONDER_DB": str(self.db),
            "RESPONDER_PUBLIC_URL": self.base,
            # The alerts go to the service's own development inbox, or to a test gateway.
            "RESPONDER_DEV_INBOX": inbox or f"127.0.0.1:{self.port}",
            "RESPONDER_SECRET": SERVER_SECRET,
            "RESPONDER_PASSWORD": PASSWORD,
        }
        self.env.pop("RESPONDER_CONFIG", None)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []  # every stderr line of every run

    def token(self) -> str:
        made = responder(
            "user", "add", "chen", "--role", "duty_officer", env=self.env, cwd=self.cwd
        )
        assert made.returncode == 0, made.stderr
        made = responder("token", "create", "chen", env=self.env, cwd=self.cwd)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    def start(self, nohup: bool = False, open_files: int | None = None) -> None:
        """Start it; ``open_files`` sets its limit on open files (ulimit -n, soft and hard)."""
        command = ["-m", "responder.cli", "--config", str(CONFIG_PATH), "serve"]

        def limit() -> None:  # in the child, before it runs Python
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.proc = subprocess.Popen(
            ["nohup"] * nohup
            + [sys.executable, *command, "--port", str(self.port), "--log-format", "json"],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit if open_files is not None else None,
        )
        first = len(self.lines)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_logged(" serving on http://", first)  # logged once the port is bound

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        self.notify()  # the process ended: a wait for a line it never wrote can end too

    def logged(self, text: str, first: int = 0) -> bool:
        return any(text in line for line in self.lines[first:])

    def wait_logged(self, text: str, first: int = 0) -> None:
        self.wait_for(lambda: self.logged(text, first) or self.proc.poll() is not None, text)  # type: ignore[union-attr]
        assert self.logged(text, first), "\n".join(self.lines[-20:])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(LIMIT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(LIMIT)


@pytest.fixture
def service(tmp_path: Path) -> Any:
    made: list[Service] = []

    def make(inbox: str | None = None) -> Service:
        made.append(Service(tmp_path, inbox))
        return made[-1]

    yield make
    for s in made:
        s.kill()


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0])


def statuses(db: Path) -> dict[str, int]:
    """The messages by status: not the rows they carry for their other obligations (one
    message per person tells of a declaration's release and press conference)."""
    with sqlite3.connect(db) as conn:
        return dict(
            conn.execute(
                "SELECT status, COUNT(*) FROM notifications WHERE carried_by IS NULL"
                " GROUP BY status"
            )
        )


def declaration() -> dict[str, Any]:
    occurred = (datetime.now(CST) - timedelta(minutes=5)).isoformat(timespec="seconds")
    return {"title": "江城化工园区储罐爆炸", "category": "accident", "level": "II",
            "occurred_at": occurred, "lead_unit": "emergency"}  # fmt: skip


def declare(svc: Service, token: str, **headers: str) -> tuple[dict[str, str], dict[str, Any]]:
    status, answer_headers, body = call(
        svc.base + "/api/v1/incidents",
        "POST",
        declaration(),
        {"Authorization": f"Bearer {token}", **headers},
    )
    assert status == 201, body
    return answer_headers, json.loads(body)


def test_serve_logs_json_without_secrets_and_stops_cleanly_on_sigterm(service: Any) -> None:
    svc = service()
    token = svc.token()
    svc.start()

    # 1. A declaration carrying the integrator's own correlation id.
    headers, incident = declare(svc, token, **{"X-Request-Id": "city-42"})
    assert headers["X-Request-Id"] == "city-42"
    # 2. A refusal, and an id made by the service when the client's is not a plain token.
    status, headers, _ = call(
        svc.base + "/api/v1/incidents",
        headers={"Authorization": "Bearer rsp_nope", "X-Request-Id": "a b"},
    )
    assert status == 401 and len(headers["X-Request-Id"]) == 16
    # 3. Page logins, right and wrong: neither password may reach the log.
    status, headers, page = call(svc.base + "/login")  # the form, and its nonce cookie
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.decode()).group(1)  # type: ignore[union-attr]
    nonce = headers["Set-Cookie"].split(";")[0]
    for password, expected in ((PASSWORD, 200), (WRONG_PASSWORD, 401)):
        form = {"username": "chen", "password": password, "csrf": csrf}
        status, _, _ = call(
            svc.base + "/login",
            "POST",
            urllib.parse.urlencode(form).encode(),
            {"Content-Type": "application/x-www-form-urlencoded", "Cookie": nonce},
        )
        assert status == expected  # 200: the redirect to the start page, followed
    # 4. The alerts reach the service's own inbox; one is acknowledged through its link.
    svc.wait_logged("sent notification 1 ")
    with sqlite3.connect(svc.db) as conn:
        (nonce,) = conn.execute("SELECT ack_nonce FROM notifications WHERE id = 1").fetchone()
    ack = ack_token(hashlib.sha256(SERVER_SECRET.encode()).digest(), nonce)
    status, _, _ = call(f"{svc.base}/ack/{ack}", "POST", b"")
    assert status == 200
    acked = "SELECT COUNT(*) FROM notifications WHERE acked_at IS NOT NULL"
    assert count(svc.db, acked + " AND carried_by IS NULL") == 1
    assert count(svc.db, acked) == 2  # the message told of the release and the press conference

    # 5. SIGTERM: a clean stop; every alert queued is sent or still queued, none lost.
    queued = count(svc.db, "SELECT COUNT(*) FROM notifications")
    assert svc.stop() == 0, "\n".join(svc.lines[-20:])
    assert count(svc.db, "SELECT COUNT(*) FROM notifications") == queued
    done = count(svc.db, "SELECT COUNT(*) FROM notifications WHERE status IN ('sent', 'queued')")
    assert done == queued

    lines = [json.loads(line) for line in svc.lines]  # every line is JSON
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    access = [x for x in lines if x["logger"] == "responder.access"]
    declared = [x for x in access if x["request_id"] == "city-42"]
    assert len(declared) == 1
    assert declared[0] | {"duration_ms": 0} == {
        **declared[0],
        "method": "POST",
        "path": "/api/v1/incidents",
        "status": 201,
        "user": "chen",
        "client": "127.0.0.1",
        "level": "info",
        "duration_ms": 0,
    }
    refused = [x for x in access if x["status"] == 401 and x["path"] == "/api/v1/incidents"]
    assert refused and refused[0]["level"] == "warning" and refused[0]["user"] is None
    assert any(x["path"] == "/ack/…" and x["status"] == 200 for x in access)
    # The request's other lines carry its id too: one id finds everything it did.
    said = [x for x in lines if x["logger"] == "responder.ops" and incident["id"] in x["message"]]
    assert [x.get("request_id") for x in said] == ["city-42"]
    assert not any(x.get("request_id") for x in lines if x["logger"] == "responder.dispatcher")
    assert lines[-1]["message"] == "responder stopped"
    log = "\n".join(svc.lines)
    for secret in (token, PASSWORD, WRONG_PASSWORD, "secret+password", SERVER_SECRET, ack, nonce):
        assert secret not in log


# -- stopping with sends in flight --------------------------------------------------------------


class HeldGateway(Watched):
    """An SMS/chat gateway (a real HTTP server in a thread) that takes each message and holds
    its answer until the test releases it: the service then has sends in flight, for as long
    as the test needs."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.received: list[str] = []  # X-Responder-Notification of each message, as it came
        self.answered: list[str] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("X-Responder-Notification", "")
                with gateway.changed:
                    gateway.received.append(key)
                    gateway.changed.notify_all()
                gateway.release.wait(LIMIT)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    return  # the service is gone: it never learns of this delivery
                with gateway.changed:
                    gateway.answered.append(key)
                    gateway.changed.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Any:
    g = HeldGateway()
    yield g
    g.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_with_sends_in_flight_finishes_them_and_keeps_the_rest_queued(
    service: Any, gateway: HeldGateway, sig: signal.Signals
) -> None:
    """SIGTERM while the gateway holds messages: the service waits for the sends in flight,
    records them sent, exits 0; nothing is left half-sent, and a restart sends the rest.
    Every message reaches the gateway exactly once.  SIGHUP (the terminal or SSH session
    closed) stops it the same way: it used to kill it at once, and the restart sent every
    message in flight a second time."""
    svc = service(inbox=gateway.address)
    token = svc.token()
    svc.start()
    for _ in range(8):  # 8 x 3 messages: more than the sending slots
        declare(svc, token)
    slots = load_config(CONFIG_PATH).alerts.concurrency
    gateway.wait_for(lambda: len(gateway.received) == slots, "every sending slot to be busy")
    before = statuses(svc.db)
    assert before.get("sending") == slots and before.get("queued", 0) >= 1, before

    first = len(svc.lines)
    assert svc.proc is not None
    svc.proc.send_signal(sig)
    svc.wait_logged(f"engine stopping: waiting for {slots} sends in flight", first)
    assert svc.proc.poll() is None  # still finishing the sends it holds
    gateway.release.set()
    assert svc.proc.wait(LIMIT) == 0, "\n".join(svc.lines[-20:])
    after = statuses(svc.db)
    assert after == {"sent": slots, "queued": before["queued"]}, after
    assert len(gateway.answered) == slots

    svc.start()  # the rest, kept queued, goes out now
    total = slots + before["queued"]
    gateway.wait_for(lambda: len(gateway.answered) == total, "every message to be answered")
    assert svc.stop() == 0  # a graceful stop records every answered send
    assert statuses(svc.db) == {"sent": total}
    assert len(gateway.received) == len(set(gateway.received)) == total  # each once


def test_started_under_nohup_it_outlives_the_terminal(service: Any) -> None:
    """``nohup responder serve &`` asks to survive the SSH session closing: the SIGHUP that
    follows is ignored (the handler that stops on SIGHUP used to override nohup)."""
    svc = service()
    token = svc.token()
    svc.start(nohup=True)
    assert svc.proc is not None
    first = len(svc.lines)
    svc.proc.send_signal(signal.SIGHUP)
    declare(svc, token)  # still answering, and its alerts still go out
    svc.wait_for(lambda: statuses(svc.db).get("sent", 0) == 3, "three alerts to be sent")
    assert svc.proc.poll() is None
    assert not svc.logged("stopping", first), "\n".join(svc.lines[first:])
    assert svc.stop() == 0


def test_kill_9_with_sends_in_flight_resends_them_with_the_same_key(
    service: Any, gateway: HeldGateway
) -> None:
    """kill -9 while the gateway holds messages: the service never learns whether they went
    out.  The restart sends them again (none lost), each with the same
    X-Responder-Notification key as the first time, so a gateway can drop the duplicate, and
    the attempt that was cut short is recorded as 'unknown'."""
    svc = service(inbox=gateway.address)
    token = svc.token()
    svc.start()
    declare(svc, token)
    gateway.wait_for(lambda: gateway.received, "the first message")
    # The declaration's messages were queued together, and fewer than the sending slots: all
    # of them are held once all have arrived.
    total = count(svc.db, "SELECT COUNT(*) FROM notifications WHERE carried_by IS NULL")
    gateway.wait_for(lambda: len(gateway.received) == total, "every message to be held")
    assert statuses(svc.db) == {"sending": total}
    cut = list(gateway.received)
    svc.kill()
    gateway.release.set()  # the gateway delivers them; nobody is there to hear it

    first = len(svc.lines)
    svc.start()
    svc.wait_for(
        lambda: sum("sent notification" in line for line in svc.lines[first:]) == total,
        "every message to be sent again and recorded",
    )
    assert svc.stop() == 0
    assert statuses(svc.db) == {"sent": total}
    # The rows the messages carry (each one's other obligation) were delivered with them.
    assert count(svc.db, "SELECT COUNT(*) FROM notifications WHERE status != 'sent'") == 0
    for key in cut:
        assert gateway.received.count(key) == 2  # sent again, with the same key
    unknown = count(svc.db, "SELECT COUNT(*) FROM attempts WHERE outcome = 'unknown'")
    assert unknown == total


def test_a_port_in_use_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    """Another program on the port: the administrator reads which address and what to do, not
    a traceback."""
    svc = Service(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", svc.port))
        taken.listen()
        ran = responder(
            "serve", "--host", "127.0.0.1", "--port", str(svc.port), env=svc.env, cwd=tmp_path
        )
    assert ran.returncode == 1
    assert "Traceback" not in ran.stderr
    last = ran.stderr.strip().splitlines()[-1]
    assert last == (
        f"responder: 无法在 127.0.0.1:{svc.port} 上提供服务:该地址已被其他程序占用。"
        "请用 --port 换一个端口,或停止占用它的程序"
    )


def test_a_host_name_that_does_not_resolve_is_one_clear_line(tmp_path: Path) -> None:
    svc = Service(tmp_path)
    ran = responder("serve", "--host", "no-such-host.invalid", "--port", str(svc.port),
                    env=svc.env, cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert (
        ran.stderr.strip()
        .splitlines()[-1]
        .startswith(f"responder: 无法在 no-such-host.invalid:{svc.port} 上提供服务:该地址无法解析")
    )


def test_a_database_that_cannot_be_opened_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    svc = Service(tmp_path)
    junk = tmp_path / "notes.txt"
    junk.write_text("meeting notes, not a database " * 20, encoding="utf-8")
    ran = responder("serve", "--port", str(svc.port), env={**svc.env, "RESPONDER_DB": str(junk)},
                    cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert (
        ran.stderr.strip()
        .splitlines()[-1]
        .startswith(f"responder: 无法打开数据库 {junk}:file is not a database。")
    )


def test_text_log_lines_carry_the_request_id_before_any_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("responder.test-text-log")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        current = CURRENT.set("city-7")
        try:
            raise ValueError("the fault")
        except ValueError:
            logger.exception("unhandled error")
        CURRENT.reset(current)
        logger.warning("the engine's own line")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue().splitlines()
    assert out[0].endswith("ERROR responder.test-text-log: unhandled error [id=city-7]")
    assert out[1] == "Traceback (most recent call last):"
    assert out[-1].endswith("responder.test-text-log: the engine's own line")


def raw_request(port: int, request: bytes) -> bytes:
    """Send bytes that may not be a valid HTTP request; return the start of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=LIMIT) as s:
        s.sendall(request)
        answer = b""  # the service closes the connection after refusing
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def test_a_request_aiohttp_cannot_parse_is_one_warning_without_what_was_sent(
    service: Any,
) -> None:
    """aiohttp refuses such a request itself (400) and used to log it as an ERROR with a
    traceback and the first 100 bytes of the offending line: a browser's oversized Cookie
    header put its session cookie in the log.  (A body said to be gzip that is not was logged
    the same way when aiohttp drained it; aiohttp no longer inflates bodies, and the sign-in
    form takes none compressed: 415, its access line the only one.)"""
    svc = service()
    svc.start()
    cookie = "responder_session=secret-session-cookie-9f2c"
    token = "rsp_secret-token-in-the-address-5e1d"
    malformed = [
        # A Cookie header over aiohttp's 8190 bytes, the session cookie first.
        b"GET / HTTP/1.1\r\nHost: x\r\nCookie: "
        + f"{cookie}; pad={'a' * 9000}".encode()
        + b"\r\n\r\n",
        # An address over 8190 bytes, a token first.
        f"GET /api/v1/incidents?token={token}&x={'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        # A header line without a colon.
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    ]
    gzip_form = (
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n\r\nnot gzip!"
    )
    first = len(svc.lines)
    for request in malformed:
        assert raw_request(svc.port, request).split(b" ", 2)[1] == b"400"
    assert raw_request(svc.port, gzip_form).split(b" ", 2)[1] == b"415"
    status, _, _ = call(svc.base + "/healthz")  # still serving
    assert status in (200, 503)
    svc.wait_logged('"path": "/healthz"', first)

    lines = [json.loads(line) for line in svc.lines[first:]]
    refused = [x for x in lines if x["logger"] == "aiohttp.server"]
    assert [(x["level"], "exception" in x) for x in refused] == [("warning", False)] * 3
    login = [x for x in lines if x["logger"] == "responder.access" and x.get("path") == "/login"]
    assert [x.get("status") for x in login] == [415]
    assert refused[0]["message"] == "malformed HTTP request from 127.0.0.1 (LineTooLong)"
    log = "\n".join(svc.lines)
    assert "secret-session-cookie" not in log and "secret-token" not in log
    assert "Traceback" not in log


def test_a_client_that_hangs_up_while_sending_its_body_is_499_not_an_error(
    service: Any,
) -> None:
    """A phone losing its network halfway through a declaration: nothing is changed, and the
    log says the client went away (499) instead of an internal error with a traceback.  (Only
    a real process shows it: aiohttp's test server cancels the handler instead.)"""
    svc = service()
    token = svc.token()
    svc.start()
    body = json.dumps(declaration()).encode()
    first = len(svc.lines)
    with socket.create_connection(("127.0.0.1", svc.port), timeout=LIMIT) as s:
        s.sendall(
            b"POST /api/v1/incidents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:20]
        )
    svc.wait_logged('"status": 499', first)
    lines = [json.loads(line) for line in svc.lines[first:]]
    assert [x for x in lines if x["level"] == "error"] == []
    [line] = [x for x in lines if x["logger"] == "responder.access"]
    assert (line["status"], line["user"], line["level"]) == (499, "chen", "info")
    assert count(svc.db, "SELECT COUNT(*) FROM incidents") == 0
