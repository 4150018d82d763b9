"""``responder serve`` as an administrator runs it: a real process on a real port, the example
config, a SQLite file, its own development inbox receiving the alerts, JSON logs on stderr, and
SIGTERM to stop it.

What it proves: one JSON object per log line; one access line per request with its id, user,
status and client; refusals stand out as warnings; no bearer token, password, server secret or
acknowledgement token is ever written; SIGTERM stops the service cleanly (exit 0) with every
queued alert either sent or still queued — none lost.

The clock is the real one here (it is a real process): the test waits on real I/O only (the
service coming up, messages reaching its inbox), never for time to pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from responder.config import load as load_config
from responder.secret import ack_token
from tests.conftest import CONFIG_PATH
from tests.sinks import free_port

SERVER_SECRET = "serve-test-secret-never-logged-7f3a"
PASSWORD = "a long and secret password 42"
WRONG_PASSWORD = "almost-the-password-43"
CST = timezone(timedelta(hours=8))


def responder(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "responder.cli", "--config", str(CONFIG_PATH), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
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
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_until(check: Any, what: str, limit: float = 30.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        try:
            got = check()
        except OSError:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a real process for real I/O, not waiting for time to pass


class Service:
    """``responder serve`` in a child process on the example config (what ``make run`` runs)."""

    def __init__(self, tmp_path: Path, inbox: str | None = None) -> None:
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

    def token(self) -> str:
        made = responder(
            "user", "add", "chen", "--role", "duty_officer", env=self.env, cwd=self.cwd
        )
        assert made.returncode == 0, made.stderr
        made = responder("token", "create", "chen", env=self.env, cwd=self.cwd)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    def start(self) -> None:
        command = ["-m", "responder.cli", "--config", str(CONFIG_PATH), "serve"]
        self.proc = subprocess.Popen(
            [sys.executable, *command, "--port", str(self.port), "--log-format", "json"],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: call(self.base + "/healthz")[0] == 200, "the service to answer")

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


@pytest.fixture
def service(tmp_path: Path) -> Any:
    made: list[Service] = []

    def make(inbox: str | None = None) -> Service:
        made.append(Service(tmp_path, inbox))
        return made[-1]

    yield make
    for s in made:
        s.kill()


@pytest.fixture
def served(service: Any) -> Any:
    svc = service()
    token = svc.token()
    svc.start()
    return svc.proc, svc.base, token, svc.db


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0])


def test_serve_logs_json_without_secrets_and_stops_cleanly_on_sigterm(served: Any) -> None:
    proc, base, token, db = served
    bearer = {"Authorization": f"Bearer {token}"}
    occurred = (datetime.now(CST) - timedelta(minutes=5)).isoformat(timespec="seconds")
    declaration = {
        "title": "江城化工园区储罐爆炸",
        "category": "accident",
        "level": "II",
        "occurred_at": occurred,
        "lead_unit": "emergency",
    }

    # 1. A declaration carrying the integrator's own correlation id.
    status, headers, body = call(
        base + "/api/v1/incidents", "POST", declaration, {**bearer, "X-Request-Id": "city-42"}
    )
    assert status == 201, body
    assert headers["X-Request-Id"] == "city-42"
    incident = json.loads(body)["id"]
    # 2. A refusal, and an id made by the service when the client's is not a plain token.
    status, headers, _ = call(
        base + "/api/v1/incidents",
        headers={"Authorization": "Bearer rsp_nope", "X-Request-Id": "a b"},
    )
    assert status == 401 and len(headers["X-Request-Id"]) == 16
    # 3. Page logins, right and wrong: neither password may reach the log.
    for password, expected in ((PASSWORD, 200), (WRONG_PASSWORD, 401)):
        form = urllib.parse.urlencode({"username": "chen", "password": password}).encode()
        status, _, _ = call(
            base + "/login", "POST", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert status == expected  # 200: the redirect to the start page, followed
    # 4. The alerts reach the service's own inbox; one is acknowledged through its link.
    wait_until(lambda: count(db, "SELECT COUNT(*) FROM notifications WHERE status = 'sent'"),
               "an alert to be sent")  # fmt: skip
    with sqlite3.connect(db) as conn:
        nonce = conn.execute("SELECT ack_nonce FROM notifications ORDER BY id LIMIT 1").fetchone()[
            0
        ]
    ack = ack_token(hashlib.sha256(SERVER_SECRET.encode()).digest(), nonce)
    status, _, _ = call(f"{base}/ack/{ack}", "POST", b"")
    assert status == 200
    assert count(db, "SELECT COUNT(*) FROM notifications WHERE acked_at IS NOT NULL") == 1

    # 5. SIGTERM: a clean stop; every alert queued is sent or still queued, none lost.
    queued = count(db, "SELECT COUNT(*) FROM notifications")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    assert count(db, "SELECT COUNT(*) FROM notifications") == queued
    assert count(db, "SELECT COUNT(*) FROM notifications WHERE status IN ('sent', 'queued')") == (
        queued
    )

    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]  # all JSON
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
    assert any(incident in x["message"] for x in lines if x["logger"] != "responder.access")
    assert lines[-1]["message"] == "responder stopped"
    for secret in (token, PASSWORD, WRONG_PASSWORD, "secret+password", SERVER_SECRET, ack, nonce):
        assert secret not in stderr


# -- stopping with sends in flight --------------------------------------------------------------


class HeldGateway:
    """An SMS/chat gateway (a real HTTP server in a thread) that takes each message and holds
    its answer until the test releases it: the service then has sends in flight, for as long
    as the test needs, without waiting on the clock."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received: list[str] = []  # X-Responder-Notification of each message, as it came
        self.answered: list[str] = []
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("X-Responder-Notification", "")
                with gateway._lock:
                    gateway.received.append(key)
                gateway.release.wait(60)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    return  # the service is gone: it never learns of this delivery
                with gateway._lock:
                    gateway.answered.append(key)

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


def declare(svc: Service, token: str) -> None:
    occurred = (datetime.now(CST) - timedelta(minutes=5)).isoformat(timespec="seconds")
    body = {"title": "江城化工园区储罐爆炸", "category": "accident", "level": "II",
            "occurred_at": occurred, "lead_unit": "emergency"}  # fmt: skip
    status, _, answer = call(
        svc.base + "/api/v1/incidents", "POST", body, {"Authorization": f"Bearer {token}"}
    )
    assert status == 201, answer


def statuses(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM notifications GROUP BY status"))


def test_sigterm_with_sends_in_flight_finishes_them_and_keeps_the_rest_queued(
    service: Any, gateway: HeldGateway
) -> None:
    """SIGTERM while the gateway holds messages: the service stops listening at once, waits
    for the sends in flight, records them sent, exits 0; nothing is left half-sent, and a
    restart sends the rest.  Every message reaches the gateway exactly once."""
    svc = service(inbox=gateway.address)
    token = svc.token()
    svc.start()
    for _ in range(4):  # 4 x 6 messages: more than the sending slots
        declare(svc, token)
    slots = load_config(CONFIG_PATH).alerts.concurrency
    wait_until(lambda: len(gateway.received) == slots, "every sending slot to be busy")
    before = statuses(svc.db)
    in_flight = before.get("sending", 0)
    assert in_flight == slots and before.get("queued", 0) >= 1, before
    assert svc.proc is not None
    svc.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: not svc.listening(), "the service to stop listening")
    assert svc.proc.poll() is None  # still finishing the sends it holds
    gateway.release.set()
    _, stderr = svc.proc.communicate(timeout=60)
    assert svc.proc.returncode == 0, stderr[-2000:]
    after = statuses(svc.db)
    assert after == {"sent": in_flight, "queued": before["queued"]}, after
    assert len(gateway.answered) == in_flight

    svc.start()  # the rest, kept queued, goes out now
    total = sum(after.values())
    wait_until(lambda: statuses(svc.db) == {"sent": total}, "every message to be sent")
    assert len(gateway.received) == len(set(gateway.received)) == total  # each once


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
    # Every message of the declaration (fewer than the sending slots) held by the gateway.
    wait_until(
        lambda: statuses(svc.db) == {"sending": len(gateway.received)}, "the sends to be held"
    )
    cut = list(gateway.received)
    svc.kill()
    gateway.release.set()  # the gateway delivers them; nobody is there to hear it

    svc.start()
    with sqlite3.connect(svc.db) as conn:
        total = conn.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
    wait_until(lambda: statuses(svc.db) == {"sent": total}, "every message to be sent")
    assert len(set(gateway.received)) == total  # every message, told apart by its key
    for key in cut:
        assert gateway.received.count(key) == 2  # sent again, with the same key
    with sqlite3.connect(svc.db) as conn:
        unknown = conn.execute("SELECT COUNT(*) FROM attempts WHERE outcome = 'unknown'")
        assert unknown.fetchone()[0] == len(cut)
