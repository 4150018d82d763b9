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
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def served(tmp_path: Path) -> Any:
    port = free_port()
    env = {
        **os.environ,
        "RESPONDER_DB": str(tmp_path / "responder.sqlite3"),
        "RESPONDER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "RESPONDER_DEV_INBOX": f"127.0.0.1:{port}",
        "RESPONDER_SECRET": SERVER_SECRET,
        "RESPONDER_PASSWORD": PASSWORD,
    }
    env.pop("RESPONDER_CONFIG", None)
    made = responder("user", "add", "chen", "--role", "duty_officer", env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    made = responder("token", "create", "chen", env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    command = ["-m", "responder.cli", "--config", str(CONFIG_PATH), "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, *command, "--log-format", "json"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: call(base + "/healthz")[0] == 200, "the service to answer")
        yield proc, base, token, tmp_path / "responder.sqlite3"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


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
