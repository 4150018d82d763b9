"""The alert engine when things break: channels down, gateways failing, secrets in URLs, a
process killed with SIGKILL in the middle of sending, and a stop while sends are in flight.

Everything is real except time: apprise sends over sockets to the SMTP and HTTP sinks of
:mod:`tests.sinks` on 127.0.0.1, the database is a SQLite file, and the kill is a real
``kill -9`` of a separate Python process.  Time is the FakeClock's, except in the kill test
whose driver process runs on the system clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from responder import queries
from responder.clock import FakeClock
from responder.config import Config
from responder.engine import failures, outbox
from responder.engine.messages import render
from responder.engine.runner import Engine
from responder.models import DeclareIncident
from responder.ops import Ops
from responder.rows import Notification
from responder.store import Database
from responder.timeutil import from_db
from tests.engine_helpers import (
    SECRET,
    attempts,
    drive,
    notification,
    ops_of,
    queue,
    settle,
    wire,
)
from tests.sinks import HttpSink, SmtpSink

pytest_plugins = ["tests.engine_fixtures"]

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "engine_driver.py"


def _at(value: str | None) -> datetime:
    t = from_db(value)
    assert t is not None
    return t


# -- 1. the mail server is down for a while ------------------------------------------------


async def test_smtp_down_retries_with_backoff_then_delivers_exactly_once(
    engine: Engine, clock: FakeClock, smtp_sink: SmtpSink, db: Database
) -> None:
    engine.cfg.alerts.attempts_per_channel = 8  # no failover while the server is away
    await asyncio.to_thread(smtp_sink.stop)
    nid = await queue(db, clock.now(), "wang-fang", ["email"])
    engine.dispatcher.wake()

    base = engine.cfg.alerts.retry_base.total_seconds()
    waits: list[float] = []
    for k in range(1, 5):  # four failed attempts while the server is down
        await settle(engine)
        row = await notification(db, nid)
        assert (row["status"], row["attempt"], row["channel_index"]) == ("queued", k, 0)
        tries = await attempts(db, nid)
        assert [a["outcome"] for a in tries] == ["error"] * k
        assert all(a["error"] and a["channel"] == "email" for a in tries)
        assert row["last_error"] == tries[-1]["error"]
        wait = (_at(row["next_attempt_at"]) - _at(tries[-1]["finished_at"])).total_seconds()
        nominal = base * 2 ** (k - 1)  # exponential, ±25 % jitter
        assert 0.75 * nominal <= wait <= 1.25 * nominal, (k, wait)
        waits.append(wait)
        clock.set(_at(row["next_attempt_at"]))
    assert waits == sorted(waits) and len(set(waits)) == len(waits)
    assert smtp_sink.messages == []

    await asyncio.to_thread(smtp_sink.start)  # back, on the same port
    row = await drive(engine, nid)
    assert (row["status"], row["sent_channel"]) == ("sent", "email")
    await smtp_sink.wait_for(1)
    clock.advance(timedelta(hours=2))
    await settle(engine)
    await asyncio.sleep(0.1)
    assert len(smtp_sink.messages) == 1
    assert smtp_sink.envelopes[0].rcpt_tos == ["wangfang@example.gov.cn"]
    assert [a["outcome"] for a in await attempts(db, nid)] == ["error"] * 4 + ["sent"]


# -- 2. a gateway answering 500: retried, then failed over -----------------------------------


async def test_http_500_is_retried_then_fails_over_to_the_next_channel(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink, db: Database
) -> None:
    person = engine.cfg.person("li-qiang")
    assert person is not None and person.channels[:2] == ["sms", "email"]
    per_channel = engine.cfg.alerts.attempts_per_channel
    http_sink.fail_next(per_channel, status=500)
    nid = await queue(db, clock.now(), person.id, list(person.channels))
    engine.dispatcher.wake()

    row = await drive(engine, nid)
    assert (row["status"], row["sent_channel"], row["channel_index"]) == ("sent", "email", 1)
    tries = await attempts(db, nid)
    assert [(a["channel"], a["outcome"]) for a in tries] == [("sms", "error")] * per_channel + [
        ("email", "sent")
    ]
    for a in tries[:-1]:
        assert "500" in a["error"]
        assert person.phone is not None and person.phone not in a["error"]  # scrubbed
    assert len(http_sink.requests) == per_channel
    assert all(r.path == "/sms" and r.status == 500 for r in http_sink.requests)
    mails = await smtp_sink.wait_for(1)
    assert len(mails) == 1 and smtp_sink.envelopes[0].rcpt_tos == [person.email]
    # The retries on the first channel waited; the failover itself did not.
    finished = [_at(a["finished_at"]) for a in tries]
    assert all(b > a for a, b in itertools.pairwise(finished[:per_channel]))
    assert finished[-1] == finished[per_channel - 1]


class TricklingGateway:
    """An HTTP gateway that answers a byte at a time, for ever: every read arrives within
    apprise's socket timeout, so only the service's own send timeout ends the send."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stopped = threading.Event()
        self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.requests += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not self.stopped.wait(0.2):
                conn.sendall(b" ")

    def close(self) -> None:
        self.stopped.set()
        self.server.close()


async def test_a_gateway_that_never_finishes_answering_is_given_up_on_and_the_next_channel_tried(
    engine: Engine, clock: FakeClock, smtp_sink: SmtpSink, db: Database
) -> None:
    """Without a send timeout such a gateway held its sending slot for ever, and a few such
    sends stopped every alert.  Given up on, the message goes by the person's next channel —
    never again by the same one, where the gateway may still be taking it."""
    gateway = TricklingGateway()
    try:
        engine.cfg.channels["sms"] = f"json://127.0.0.1:{gateway.port}/sms?:to={{phone}}"
        engine.dispatcher.sender.timeout = 1.0  # real seconds: a network send runs on real time
        person = engine.cfg.person("li-qiang")
        assert person is not None and person.channels[:2] == ["sms", "email"]
        nid = await queue(db, clock.now(), person.id, list(person.channels))
        engine.dispatcher.wake()

        row = await drive(engine, nid)
        assert (row["status"], row["sent_channel"]) == ("sent", "email")
        tries = await attempts(db, nid)
        assert [(a["channel"], a["outcome"]) for a in tries] == [
            ("sms", "error"),
            ("email", "sent"),
        ]
        assert tries[0]["error"] == failures.SEND_TIMED_OUT + "1 s"
        assert gateway.requests == 1  # not tried again on the same channel
        zh, _ = failures.explain(tries[0]["error"])
        assert zh is not None and "可能已送达" in zh and "下一渠道" in zh
        assert len(await smtp_sink.wait_for(1)) == 1
        # The row reads 'sent' as soon as its transaction commits; the send's task ends a few
        # loop turns later (its outcome handed back from the writer thread), and leaves
        # in_flight by its done-callback the turn after.  Wait for that task, not for time.
        left = set(engine.dispatcher.in_flight)
        if left:
            await asyncio.wait(left, timeout=10)  # bounded: only a stuck send takes this long
        await asyncio.sleep(0)
        assert engine.dispatcher.in_flight == set()  # the slot is free again
    finally:
        gateway.close()


async def drill_without_duties(engine: Engine, clock: FakeClock, title: str) -> str:
    """A level III drill: no obligations, no steps — only the messages a test queues for it."""
    return await ops_of(engine).declare(
        DeclareIncident(
            title=title,
            category="accident",
            level="III",
            occurred_at=clock.now(),
            lead_unit="emergency",
            drill=True,
        ),
        "test",
    )


# -- 3. every channel failing --------------------------------------------------------------


async def test_every_channel_failing_tells_the_admins(
    engine: Engine,
    clock: FakeClock,
    http_sink: HttpSink,
    smtp_sink: SmtpSink,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine.cfg.alerts.attempts_per_channel = 2
    incident_id = await drill_without_duties(engine, clock, "演练:管道泄漏")
    person = engine.cfg.person("wang-fang")
    assert person is not None and person.channels == ["sms", "voice", "email"]
    http_sink.fail_next(4)  # sms ×2, voice ×2
    smtp_sink.fail_next(2)  # email ×2; the admin's email afterwards goes through
    nid = await queue(db, clock.now(), person.id, list(person.channels), incident_id=incident_id)
    engine.dispatcher.wake()

    # The first round fails on every channel; the administrator is told on each of theirs
    # (email and sms) at once; those work again, so the message to 王芳 is tried again at once
    # (not given up on, as it was), on the first of them that worked.
    row = await drive(engine, nid)
    assert row["status"] == "sent" and row["rounds"] == 1 and row["retry_at"] is None
    tries = [(a["channel"], a["outcome"]) for a in await attempts(db, nid)]
    assert tries[:6] == [
        ("sms", "error"),
        ("sms", "error"),
        ("voice", "error"),
        ("voice", "error"),
        ("email", "error"),
        ("email", "error"),
    ]
    assert tries[6:] == [(row["sent_channel"], "sent")] and row["sent_channel"] in ("sms", "email")
    await settle(engine)
    told = await db.fetchall("SELECT * FROM notifications WHERE kind = 'watchdog' ORDER BY id")
    assert [(w["person_id"], w["status"], w["sent_channel"]) for w in told] == [
        ("admin-liu", "sent", "email"),
        ("admin-liu", "sent", "sms"),
    ]
    mails = await smtp_sink.wait_for(1)
    assert smtp_sink.envelopes[0].rcpt_tos == ["it@example.gov.cn"]
    body = mails[0].get_body().get_content()  # type: ignore[union-attr]
    assert "王芳" in body and "DRILL" in body and "DRILL" in str(mails[0]["subject"])
    # Asked to phone the person, the administrator (at 3 a.m., on a phone) is given the number
    # and the unit, not left to look them up.
    assert "王芳 (Emergency Management Bureau)" in body
    assert "phone them on +8613800000001" in str(mails[0]["subject"])
    failed = await db.fetchall(
        "SELECT data FROM audit_log WHERE action = 'notification.failed' ORDER BY seq"
    )
    assert [json.loads(a["data"])["notification"] for a in failed] == [nid]
    # The log says so at ERROR, by name (it had only a warning per try).
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert [e.split("; tried again at ")[0] for e in errors] == [
        f"notification {nid} to wang-fang (王芳) failed on every channel (last: "
        f"{row['last_error']}); the administrators are told"
    ]
    # What the API shows: the gateway's and the mail server's own words, and beside them what
    # they mean for a duty officer, Chinese first.
    [shown] = [n for n in await queries.notifications(db, engine.cfg, incident_id)
               if n["id"] == nid]  # fmt: skip
    assert shown["last_error"] and shown["last_error_message"].startswith("邮件服务器拒收")
    assert shown["last_error_message_en"].startswith("the mail server refused this message")
    assert [a["error_message"].split("(")[0] for a in shown["attempts"][:6]] == [
        "网关出错", "网关出错", "网关出错", "网关出错", "邮件服务器拒收了这封邮件", "邮件服务器拒收了这封邮件"
    ]  # fmt: skip


async def test_a_person_or_channel_removed_from_the_config_while_a_message_waits(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink, db: Database
) -> None:
    """The file changed and the service restarted while messages waited.  A removed channel
    is passed over for the person's next one; a removed person's message fails, saying why in
    words for people, and the administrators are told."""
    engine.cfg.alerts.attempts_per_channel = 1
    incident_id = await drill_without_duties(engine, clock, "演练:通讯录变更")
    wang = engine.cfg.person("wang-fang")
    assert wang is not None and wang.channels == ["sms", "voice", "email"]
    # The file as the restarted service reads it (changed before anything is queued: the
    # running dispatcher may take a message the moment it is in the outbox).
    del engine.cfg.channels["voice"]
    engine.cfg.people = [p for p in engine.cfg.people if p.id != "wang-fang"]
    moved = await queue(db, clock.now(), "zhao-min", ["voice", "email"], incident_id=incident_id)
    gone = await queue(db, clock.now(), "wang-fang", wang.channels, incident_id=incident_id)
    engine.dispatcher.wake()

    row = await drive(engine, moved)
    assert (row["status"], row["sent_channel"]) == ("sent", "email")
    gone_row = await drive(engine, gone)
    assert gone_row["status"] == "failed"
    await settle(engine)
    shown = {n["id"]: n for n in await queries.notifications(db, engine.cfg, incident_id)}
    [voice_try, _] = shown[moved]["attempts"]
    assert voice_try["error"] == "message not built: LookupError: the channel is no longer" \
        " in the configuration: voice"  # fmt: skip
    assert voice_try["error_message"] == "该渠道已从配置中删除;改用此人的下一渠道"
    assert shown[gone]["last_error_message"].startswith("收件人已从配置中删除")
    assert shown[gone]["last_error_message_en"].startswith("the person was removed")
    told = await db.fetchall("SELECT person_id, status FROM notifications WHERE kind = 'watchdog'")
    # Told once, on each of the administrator's channels (email and sms).
    assert [(t["person_id"], t["status"]) for t in told] == [("admin-liu", "sent")] * 2


async def test_a_failing_watchdog_message_does_not_spawn_more(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink, db: Database
) -> None:
    engine.cfg.alerts.attempts_per_channel = 1
    engine.cfg.alerts.admins = ["admin-liu", "chen-jing"]
    await asyncio.to_thread(smtp_sink.stop)
    http_sink.fail_next(100)
    nid = await queue(db, clock.now(), "zhao-min", ["sms", "email"])
    engine.dispatcher.wake()
    assert (await drive(engine, nid))["status"] == "failed"
    for _ in range(6):  # an hour and a half: tried again and again, nothing further queued
        clock.advance(timedelta(minutes=15))
        await settle(engine)
    rows = await db.fetchall(
        "SELECT id, kind, person_id, channels, status, rounds FROM notifications ORDER BY id"
    )
    # The administrators were told once, on each of their channels; each message is still
    # being tried (one round per 15 minutes here, the clock jumping), none begot another.
    assert [(r["kind"], r["person_id"], r["channels"], r["status"]) for r in rows] == [
        ("notice", "zhao-min", '["sms", "email"]', "failed"),
        ("watchdog", "admin-liu", '["email"]', "failed"),
        ("watchdog", "admin-liu", '["sms"]', "failed"),
        ("watchdog", "chen-jing", '["sms"]', "failed"),
        ("watchdog", "chen-jing", '["email"]', "failed"),
        ("watchdog", "chen-jing", '["chat"]', "failed"),
    ]
    assert all(r["rounds"] >= 6 for r in rows), [r["rounds"] for r in rows]
    failed = await db.fetchall("SELECT data FROM audit_log WHERE action = 'notification.failed'")
    assert len(failed) == 6  # once per message, not once per round


# -- 4. secrets never leak -----------------------------------------------------------------

PASSWORD, TOKEN, GET_SECRET = "S3cretPass", "TOPSECRET123", "GETSECRET99"


@pytest.mark.parametrize("gateway", ["answers 500", "is down"])
async def test_secrets_in_a_failing_channel_url_never_leak(
    gateway: str,
    engine: Engine,
    clock: FakeClock,
    http_sink: HttpSink,
    db: Database,
    caplog: pytest.LogCaptureFixture,
    dump_tables: object,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = http_sink.port
    if gateway == "is down":
        await http_sink.stop()
    else:
        http_sink.fail_next(100)
    engine.cfg.channels["sms"] = (
        f"json://user:{PASSWORD}@127.0.0.1:{port}/x?:token={TOKEN}&-key={GET_SECRET}&:to={{phone}}"
    )
    engine.cfg.alerts.attempts_per_channel = 2
    nid = await queue(db, clock.now(), "zhao-min", ["sms"])
    engine.dispatcher.wake()
    row = await drive(engine, nid)
    await settle(engine)
    assert row["status"] == "failed"
    tries = await attempts(db, nid)
    assert len(tries) == 2 and all(a["error"] for a in tries)
    if gateway == "answers 500":
        assert len(http_sink.requests) >= 2  # the URL really was used, secrets and all
        assert http_sink.requests[0].payload["token"] == TOKEN

    texts = {
        "attempts.error": " ".join(a["error"] for a in tries),
        "notifications.last_error": row["last_error"],
        "audit_log": " ".join(
            r["data"] for r in await db.fetchall("SELECT data FROM audit_log ORDER BY seq")
        ),
        "database": repr(await dump_tables(db)),  # type: ignore[operator]
        "log": caplog.text,
        "metrics": "\n".join(engine.metrics.render()),
    }
    assert "notification.failed" in " ".join(
        r["action"] for r in await db.fetchall("SELECT action FROM audit_log")
    )
    for where, text in texts.items():
        for secret in (PASSWORD, TOKEN, GET_SECRET):
            assert secret not in text, f"{secret} leaked into {where}"


# -- 5. kill -9 in the middle of sending ----------------------------------------------------


async def _driver(db_path: Path, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DRIVER),
        str(db_path),
        str(port),
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "RESPONDER_DRIVER_CONCURRENCY": "4"},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 10)
    assert line.strip() == b"ready", line
    return proc


PROC = Path("/proc")
HAS_PROC = PROC.exists()


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in PROC.glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def _count(db: Database, status: str) -> int:
    row = await db.fetchone("SELECT COUNT(*) FROM notifications WHERE status = ?", (status,))
    assert row is not None
    return int(row[0])


def _key(request: object) -> str:
    headers = {k.lower(): v for k, v in request.headers.items()}  # type: ignore[attr-defined]
    return headers["x-responder-notification"]


@pytest.mark.sqlite_only  # one process restarted on its own SQLite file; replicas: tests/test_replicas.py
async def test_kill_9_mid_dispatch_then_restart_delivers_everything_at_least_once(
    db: Database, db_path: Path
) -> None:
    started = time.monotonic()
    n = 30
    now = datetime.now(UTC) - timedelta(seconds=1)  # the driver runs on the system clock
    people = ["wang-fang", "li-qiang", "zhao-min", "sun-li", "chen-jing", "wu-gang"]
    ids = [await queue(db, now, people[i % len(people)], ["sms"]) for i in range(n)]

    async with asyncio.timeout(20), HttpSink(delay=0.3) as sink:
        proc = await _driver(db_path, sink.port)
        try:
            # Kill once some are committed 'sent' and others are held by the sink.  (Polling on
            # purpose, here and below: another process writes what is polled.)
            while not (await _count(db, "sent") >= 6 and len(sink.requests) > 0):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            while len(sink.requests) <= await _count(db, "sent"):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            helpers = _descendants(proc.pid)  # the sending process (and the fork server)
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
            # Nothing of the killed service keeps sending behind the restarted one's back.
            assert helpers or not HAS_PROC
            while any(_alive(pid) for pid in helpers):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        before = len(sink.requests)
        sent_before = {
            r["id"] for r in await db.fetchall("SELECT id FROM notifications WHERE status = 'sent'")
        }
        in_flight = {
            r["id"]
            for r in await db.fetchall("SELECT id FROM notifications WHERE status = 'sending'")
        }
        assert sent_before and in_flight, (sent_before, in_flight)
        assert len(sent_before) < n

        proc = await _driver(db_path, sink.port)
        try:
            while await _count(db, "sent") < n:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        finally:
            proc.terminate()
            await proc.wait()

    rows = await db.fetchall("SELECT id, status, sent_channel FROM notifications ORDER BY id")
    assert [(r["id"], r["status"], r["sent_channel"]) for r in rows] == [
        (i, "sent", "sms") for i in ids
    ]
    seen: dict[int, list[str]] = defaultdict(list)
    for request in sink.requests:
        key = _key(request)
        seen[int(key.split("-", 1)[0])].append(key)
    assert set(seen) == set(ids)  # every notification reached the gateway
    after = Counter(int(_key(r).split("-", 1)[0]) for r in sink.requests[before:])
    assert not sent_before & set(after), "a message committed as sent went out again"
    for nid, keys in seen.items():  # a duplicate carries its first delivery's key
        assert keys == [f"{nid}-sms"] * len(keys)
    duplicates = {nid for nid, keys in seen.items() if len(keys) > 1}
    assert duplicates <= in_flight  # only what was in flight at the kill may go out twice
    unknown = await db.fetchall("SELECT notification_id FROM attempts WHERE outcome = 'unknown'")
    assert {r[0] for r in unknown} == in_flight
    assert time.monotonic() - started < 20


# -- 11. a graceful stop while sends are in flight -------------------------------------------


@pytest.fixture
async def slow_sink() -> AsyncIterator[HttpSink]:
    async with HttpSink(delay=0.4) as sink:
        yield sink


async def test_stop_with_sends_in_flight_leaves_nothing_half_done(
    db: Database, cfg: Config, clock: FakeClock, slow_sink: HttpSink
) -> None:
    wire(cfg, slow_sink.port, 9)  # email is not used here
    cfg.alerts.concurrency = 4
    people = ["wang-fang", "li-qiang", "zhao-min", "sun-li", "chen-jing"]
    ids = [await queue(db, clock.now(), people[i % 5], ["sms"]) for i in range(10)]

    engine = Engine(db, cfg, clock, SECRET)
    await engine.start()
    try:
        await slow_sink.wait_for(4)  # four sends held by the sink
        assert await _count(db, "sending") == 4
    finally:
        await engine.stop()
    assert await _count(db, "sending") == 0
    statuses = Counter(r["status"] for r in await db.fetchall("SELECT status FROM notifications"))
    assert statuses == {"sent": 4, "queued": 6}
    assert len(slow_sink.requests) == 4
    assert (
        await db.fetchone("SELECT 1 FROM attempts WHERE outcome IN ('started', 'unknown')") is None
    )

    engine = Engine(db, cfg, clock, SECRET)  # the next start sends the rest, and only the rest
    await engine.start()
    try:
        await slow_sink.wait_for(10)
        await settle(engine)
    finally:
        await engine.stop()
    rows = await db.fetchall("SELECT id, status FROM notifications ORDER BY id")
    assert [(r["id"], r["status"]) for r in rows] == [(i, "sent") for i in ids]
    keys = [_key(r) for r in slow_sink.requests]
    assert sorted(keys) == sorted(f"{i}-sms" for i in ids)


async def test_stop_at_any_moment_leaves_the_store_consistent(
    db: Database, wired: Config, clock: FakeClock, http_sink: HttpSink
) -> None:
    """Stop the engine at arbitrary points of busy rounds (firing steps, claiming, sending,
    recording): never a notification left 'sending', never a transaction left open."""
    ops = Ops(db, wired, clock)
    for i in range(2):
        await ops.declare(
            DeclareIncident(
                title=f"事件{i}",
                category="accident",
                level="I",
                occurred_at=clock.now() - timedelta(hours=5),
                lead_unit="emergency",
            ),
            "test",
        )
    for round_ in range(10):
        people = ["wang-fang", "li-qiang", "zhao-min", "sun-li"]
        for p in people:
            await queue(db, clock.now(), p, ["sms", "email"])
        engine = Engine(db, wired, clock, SECRET)
        await engine.start()
        await asyncio.sleep(0.002 * round_)
        await engine.stop()
        assert await _count(db, "sending") == 0, round_
        started = await db.fetchone("SELECT COUNT(*) FROM attempts WHERE outcome = 'started'")
        assert started is not None and started[0] == 0, round_
        # The writer is not stuck inside a transaction:
        await db.transact(lambda tx: tx.execute("SELECT 1"))
        clock.advance(timedelta(minutes=30))
    engine = Engine(db, wired, clock, SECRET)
    await engine.start()
    try:
        await settle(engine, limit=10)
    finally:
        await engine.stop()
    unsent = await db.fetchall("SELECT id, status FROM notifications WHERE status != 'sent'")
    assert [tuple(r) for r in unsent] == []


@pytest.mark.sqlite_only  # another process's SQLite lock (PRAGMA busy_timeout)
async def test_a_busy_database_while_recording_does_not_strand_a_sent_message(
    db: Database,
    db_path: Path,
    cfg: Config,
    clock: FakeClock,
    slow_sink: HttpSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another process holds the write lock when a send finishes: the outcome is recorded as
    soon as the lock is free — not left 'sending' until the next restart, and not sent twice."""
    wire(cfg, slow_sink.port, 9)
    await db.transact(lambda tx: tx.execute("PRAGMA busy_timeout = 50"))  # give up quickly
    engine = Engine(db, cfg, clock, SECRET)
    await engine.start()
    other = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
    try:
        nid = await queue(db, clock.now(), "wang-fang", ["sms"])
        engine.dispatcher.wake()
        await slow_sink.wait_for(1)  # the send is in flight, held by the sink for 0.4 s
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
        async with asyncio.timeout(5):  # the send finishes; recording it meets the lock
            while "database is locked" not in caplog.text:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await asyncio.to_thread(other.execute, "ROLLBACK")
        async with asyncio.timeout(10):
            while (await notification(db, nid))["status"] != "sent":  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        other.close()
        await engine.stop()
    assert len(slow_sink.requests) == 1
    assert [a["outcome"] for a in await attempts(db, nid)] == ["sent"]
    assert "database is locked" in caplog.text


async def test_the_every_channel_failed_alert_fits_a_two_part_sms(
    engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted on what the administrator's SMS says, with a production link."""
    said: dict[str, Any] = {}
    monkeypatch.setattr(outbox, "tell_admins", lambda tx, cfg, secret, **kw: said.update(kw))
    n = Notification(
        id=1,
        incident_id="INC-20261126-0001",
        obligation_id=None,
        person_id="wang-fang",
        channels=["sms"],
        channel_index=0,
        attempt=0,
        kind="deadline",
        context={},
        ack_nonce="",
    )
    engine.dispatcher.tell_admins(sqlite3.connect(":memory:"), n, clock.now())
    assert said["zh"] == "区应急管理局王芳所有渠道均未收到提醒,请致电+8613800000001并检查渠道配置"
    ctx = {
        "step_kind": "watchdog",
        "title": "江城化工园区储罐爆炸事故",
        "action": said["zh"],
        "ack_url": "https://yjxx.jiangcheng.gov.cn/ack/" + "A" * 32,
    }
    assert len(render("sms", "zh", ctx).body) <= 134
