"""Several real ``responder serve`` processes on one PostgreSQL database.

Each replica serves the API and runs the scheduler and the dispatcher; the tests check that
they share the work without losing or doubling a message, that a replica killed with -9
loses its claims to the others when their lease runs out, that a change made on one is seen
by the other, and that a PostgreSQL restart under load heals by itself.

Real processes and a real server: waits are for what the replicas do, bounded so a hang
fails (``LIMIT``).  The example config with ``alerts.send_timeout = 2s`` (a claim's lease is
then 2 × 2 + 10 = 14 s) and every channel pointed at one test gateway.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from responder.secret import ack_token
from tests.conftest import CONFIG_PATH
from tests.pg_server import PgServer, fresh_database
from tests.test_serve import LIMIT, SERVER_SECRET, Service, Watched, call, declaration

SEND_TIMEOUT_S = 2
LEASE_S = 2 * SEND_TIMEOUT_S + 10  # responder.engine.dispatcher.lease


class Gateway(Watched):
    """An SMS/chat gateway in a thread: records each message's X-Responder-Notification key
    and path; answers after ``delay`` seconds, or holds every answer while ``hold`` is clear."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.hold = threading.Event()
        self.hold.set()  # answering
        self.received: list[tuple[str, str]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("X-Responder-Notification", "")
                with gateway.changed:
                    gateway.received.append((key, self.path.split("?")[0]))
                    gateway.changed.notify_all()
                gateway.hold.wait(LIMIT)
                time.sleep(gateway.delay)  # a gateway's own pace (a real server's thread)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the replica is gone: it never learns of this delivery

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def keys(self) -> Counter[tuple[str, str]]:
        with self.changed:
            return Counter(self.received)

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


class Replica(Service):
    """``responder serve`` on the test config and the shared PostgreSQL database."""

    def __init__(self, tmp_path: Path, url: str, config: Path, inbox: str) -> None:
        super().__init__(tmp_path, inbox)
        self.config = config
        self.env["RESPONDER_DB"] = url
        self.url = url

    def start(self, nohup: bool = False, open_files: int | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "responder.cli", "--config", str(self.config), "serve",
             "--port", str(self.port), "--log-format", "json"],
            env=self.env, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        first = len(self.lines)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_logged(" serving on http://", first)

    def sent(self) -> int:
        """Messages this replica logged as sent (every run of it)."""
        return sum("sent notification" in line for line in self.lines)

    def token(self) -> str:
        made = subprocess.run(
            [sys.executable, "-m", "responder.cli", "--config", str(self.config),
             "user", "add", "chen", "--role", "duty_officer"],
            env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=LIMIT,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        made = subprocess.run(
            [sys.executable, "-m", "responder.cli", "--config", str(self.config),
             "token", "create", "chen"],
            env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=LIMIT,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()


def test_config(tmp_path: Path) -> Path:
    """The example config, its rule sets by absolute path, sends given up after 2 s."""
    text = CONFIG_PATH.read_text(encoding="utf-8")
    rules = CONFIG_PATH.parent / "rules"
    text = text.replace('"rules/', f'"{rules}/')
    text = re.sub(r"(?m)^send_timeout = .*$", f'send_timeout = "{SEND_TIMEOUT_S}s"', text)
    path = tmp_path / "replicas.toml"
    path.write_text(text, encoding="utf-8")
    return path


test_config.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture
def cluster(tmp_path: Path, pg_server: PgServer) -> Any:
    """``make(n, gateway)``: n replicas (not started) on one new database."""
    url = fresh_database(pg_server.url())
    config = test_config(tmp_path)
    made: list[Replica] = []

    def make(n: int, gateway: Gateway) -> list[Replica]:
        for i in range(n):
            folder = tmp_path / f"replica{i}"
            folder.mkdir()
            made.append(Replica(folder, url, config, gateway.address))
        return made[-n:]

    yield make
    for r in made:
        r.kill()


@pytest.fixture
def gateway() -> Any:
    g = Gateway()
    yield g
    g.close()


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def statuses(url: str) -> dict[str, int]:
    return dict(rows(url, "SELECT status, COUNT(*) FROM notifications GROUP BY status"))  # type: ignore[arg-type]


def wait_until(check: Any, what: str, limit: float = LIMIT) -> Any:
    """Poll the shared database (another process's work) until ``check()``, bounded."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(0.2)  # polling real processes through their database, bounded by limit
    raise AssertionError(f"gave up waiting for {what}")


def all_sent(url: str) -> int:
    """Wait until every message is sent and no step is due unfired; their number."""

    def settled() -> int:
        due = rows(
            url,
            "SELECT COUNT(*) FROM steps WHERE status = 'pending' AND due_at <= "
            "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        state = statuses(url)
        return state.get("sent", 0) if due == [(0,)] and set(state) == {"sent"} else 0

    try:
        return int(wait_until(settled, "every message sent"))
    except AssertionError:
        left = rows(
            url,
            "SELECT status, kind, last_error, lease_until, next_attempt_at FROM notifications"
            " WHERE status != 'sent' LIMIT 5",
        )
        raise AssertionError(f"not all sent: {statuses(url)}; e.g. {left}") from None


def declare_on(replica: Replica, token: str, **fields: Any) -> dict[str, Any]:
    status, _, body = call(
        replica.base + "/api/v1/incidents",
        "POST",
        {**declaration(), **fields},
        {"Authorization": f"Bearer {token}"},
    )
    assert status == 201, body
    return json.loads(body)


@pytest.mark.parametrize("replicas", [2, 3])
def test_a_burst_is_shared_between_replicas_each_message_once(cluster: Any, replicas: int) -> None:
    """~1,000 messages due at once (340 declarations of three messages each: one a person,
    listing both deadlines), a gateway taking 50 ms a message: every replica sends, every
    message is delivered, none twice on a channel; the audit log all replicas appended to
    concurrently is one intact chain."""
    gateway = Gateway(delay=0.05)
    try:
        every = cluster(replicas, gateway)
        a = every[0]
        token = a.token()
        for r in every:
            r.start()
        for i in range(340):  # declared through every replica: their audit appends interleave
            declare_on(every[i % replicas], token, title=f"演练负载 {i}")
        all_sent(a.url)
        # Sent: the messages themselves (a row carried by another goes out inside it).
        total = rows(a.url, "SELECT COUNT(*) FROM notifications WHERE carried_by IS NULL")[0][0]
        assert total >= 1000
        keys = gateway.keys()
        assert len(keys) == total and set(keys.values()) == {1}  # none twice on a channel
        sent = [r.sent() for r in every]
        assert sum(sent) == total and all(sent), sent  # every replica took a share
        verified = subprocess.run(
            [sys.executable, "-m", "responder.cli", "--config", str(a.config), "verify-audit"],
            env=a.env, cwd=a.cwd, capture_output=True, text=True, timeout=LIMIT,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr  # one intact chain
        assert all(r.stop() == 0 for r in every)
    finally:
        gateway.close()


def test_a_replica_killed_mid_send_loses_its_claims_to_the_other(
    cluster: Any, gateway: Gateway
) -> None:
    """kill -9 of a replica while the gateway holds its sends, the other replica running all
    along: it sends them when the lease runs out (plus a round), each with the same key;
    repeats ≤ what was in flight."""
    a, b = cluster(2, gateway)
    token = a.token()
    a.start()
    b.start()
    gateway.hold.clear()  # every message is held: a's sends are in flight
    incident = declare_on(a, token)
    # The declaration's messages are fewer than the sending slots: all held at once.
    carriers = "SELECT id FROM notifications WHERE carried_by IS NULL AND status = 'sending'"

    def all_held() -> int:
        sending = {str(r[0]) for r in rows(a.url, carriers)}
        held = {k.split("-")[0] for k, _ in gateway.received}
        queued = statuses(a.url).get("queued", 0)
        return len(sending) if sending and sending <= held and not queued else 0

    wait_until(all_held, "a's messages held")
    in_flight = [k for k, _ in gateway.received]
    a.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    a.proc.wait(LIMIT)  # type: ignore[union-attr]
    killed = time.monotonic()
    gateway.hold.set()  # the gateway delivers them; a is not there to hear it
    all_sent(a.url)
    took = time.monotonic() - killed
    assert took <= LEASE_S + 2 + 3  # the lease, a round (2 s), and the poll of all_sent
    seen = Counter(k for k, _ in gateway.received)
    assert set(in_flight) <= set(seen)
    resent = sum(n - 1 for n in seen.values())
    assert resent <= len(in_flight)
    unknown = rows(a.url, "SELECT COUNT(*) FROM attempts WHERE outcome = 'unknown'")[0][0]
    assert 1 <= unknown <= len(in_flight)  # the cut-short tries, recorded as such
    # Declared on a, seen and changed on b.
    status, _, body = call(
        f"{b.base}/api/v1/incidents/{incident['id']}", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200 and json.loads(body)["id"] == incident["id"]
    assert b.stop() == 0


def test_declared_on_one_replica_acknowledged_and_released_on_the_other(
    cluster: Any, gateway: Gateway
) -> None:
    a, b = cluster(2, gateway)
    token = a.token()
    a.start()
    b.start()
    incident = declare_on(a, token)
    iid = incident["id"]
    # Acknowledged on b, through the link a's message carried (same server secret).
    all_sent(a.url)
    (nonce,) = rows(a.url, "SELECT ack_nonce FROM notifications WHERE carried_by IS NULL LIMIT 1")[
        0
    ]
    link = ack_token(hashlib.sha256(SERVER_SECRET.encode()).digest(), nonce)
    status, _, body = call(f"{b.base}/ack/{link}", "POST", b"")
    assert status == 200, body
    acked = rows(a.url, "SELECT COUNT(*) FROM notifications WHERE acked_at IS NOT NULL")
    assert acked == [(2,)]  # the message, and the duty it carried
    release = {
        "published_at": declaration()["occurred_at"],
        "text": "权威信息",
        "channels": ["政府网站"],
        "checklist": {},
    }
    status, _, body = call(
        f"{b.base}/api/v1/incidents/{iid}/releases",
        "POST",
        release,
        {"Authorization": f"Bearer {token}"},
    )
    assert status == 201, body
    met = rows(
        a.url,
        f"SELECT status FROM obligations WHERE incident_id = '{iid}'"
        " AND kind = 'authoritative_release'",
    )
    assert met == [("met",)]
    pending = rows(
        a.url,
        "SELECT COUNT(*) FROM steps s JOIN obligations o ON o.id = s.obligation_id"
        f" WHERE o.incident_id = '{iid}' AND o.kind = 'authoritative_release'"
        " AND s.status = 'pending'",
    )
    assert pending == [(0,)]  # a's scheduler has nothing left to fire for it
    verified = subprocess.run(
        [sys.executable, "-m", "responder.cli", "--config", str(a.config), "verify-audit"],
        env=a.env, cwd=a.cwd, capture_output=True, text=True, timeout=LIMIT,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert a.stop() == 0 and b.stop() == 0


def test_postgresql_restarted_under_load_the_replicas_heal_and_lose_nothing(
    cluster: Any, gateway: Gateway, pg_server: PgServer
) -> None:
    a, b = cluster(2, gateway)
    token = a.token()
    a.start()
    b.start()
    before = [declare_on(a if i % 2 else b, token)["id"] for i in range(20)]
    pg_server.restart()  # every connection is cut; committed work is kept
    after = []
    deadline = time.monotonic() + LIMIT
    while len(after) < 20 and time.monotonic() < deadline:
        status, _, body = call(
            f"{b.base}/api/v1/incidents",
            "POST",
            declaration(),
            {"Authorization": f"Bearer {token}"},
        )
        if status == 201:
            after.append(json.loads(body)["id"])
        else:  # while a connection is re-opened: refused, never half-done
            assert status == 503, body
            time.sleep(0.2)  # a client retrying, as Retry-After asks
    assert len(after) == 20
    ids = {r[0] for r in rows(a.url, "SELECT id FROM incidents")}
    assert set(before) | set(after) <= ids
    all_sent(a.url)
    for replica in (a, b):  # each heals by itself: its next round's commit (<= 2 s) clears it

        def healthy(replica: Replica = replica) -> dict[str, Any] | None:
            status, _, body = call(f"{replica.base}/healthz")
            return json.loads(body) if status == 200 else None

        health = wait_until(healthy, f"{replica.base}/healthz to be 200 again")
        assert health["replica"].endswith(f":{replica.port}")
    verified = subprocess.run(
        [sys.executable, "-m", "responder.cli", "--config", str(a.config), "verify-audit"],
        env=a.env, cwd=a.cwd, capture_output=True, text=True, timeout=LIMIT,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr  # one intact chain
    assert a.stop() == 0 and b.stop() == 0
