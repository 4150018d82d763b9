"""Alerts keep trying while they matter, and urgent ones go first (issue 14, findings 1 and 14).

A message that failed on every channel used to be final: with the mail server down, the SMS
gateway answering 500 and the voice gateway hanging, a person's alert and the administrators'
"failed on every channel" alerts were marked failed within seconds and never tried again after
the mail server came back.  Now such a message is tried again, round after round, until it is
delivered or no longer matters; a channel that works again is used at once; the administrators
are told once per message, on every channel they have.  And the administrators' alarms and the
breach alerts are claimed before routine reminders, however long the queue.

Everything is real except time: apprise sends to the SMTP and HTTP sinks on 127.0.0.1 (and to a
gateway that never finishes answering), the database is a SQLite file, the clock is a FakeClock.
A mail server "down" answers 421 to every message rather than refusing connections: a port
given up for a while may be taken by another program on a shared machine (it happened).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from responder import queries
from responder.ack import acknowledge
from responder.clock import FakeClock
from responder.config import Config
from responder.engine import outbox
from responder.engine.runner import Engine
from responder.models import CloseIncident, DeclareIncident, RecordRelease
from responder.secret import ack_token
from responder.store import Database
from responder.timeutil import from_db
from tests.engine.test_failing_channels_crashes_and_stops import TricklingGateway
from tests.engine_helpers import SECRET, attempts, notification, ops_of, queue, settle
from tests.sinks import HttpSink, SmtpSink

pytest_plugins = ["tests.engine_fixtures"]

M = timedelta(minutes=1)
DOWN = "421 4.3.2 Service not available"  # what a mail server down for maintenance answers


def _at(value: str | None) -> datetime:
    t = from_db(value)
    assert t is not None
    return t


async def declare(engine: Engine, clock: FakeClock) -> tuple[str, int, int]:
    """A level II incident that occurred 10 minutes ago, its notices delivered.  Returns the
    incident, its authoritative release obligation and that obligation's deadline step."""
    incident_id = await ops_of(engine).declare(
        DeclareIncident(
            title="江城化工园区储罐爆炸",
            category="accident",
            level="II",
            occurred_at=clock.now() - 10 * M,
            lead_unit="emergency",
        ),
        "test",
    )
    await settle(engine)
    row = await engine.db.fetchone(
        "SELECT o.id, s.id FROM obligations o JOIN steps s ON s.obligation_id = o.id"
        " WHERE o.incident_id = ? AND o.kind = 'authoritative_release' AND s.is_deadline = 1",
        (incident_id,),
    )
    assert row is not None
    return incident_id, int(row[0]), int(row[1])


async def put(
    db: Database, now: datetime, person_id: str, channels: list[str], *, kind: str, **ids: Any
) -> int:
    """One notification straight into the outbox, as the scheduler queues it."""
    return await queue(db, now, person_id, channels, kind=kind, **ids)


async def run_until(
    engine: Engine, clock: FakeClock, done: Callable[[], Awaitable[bool]], limit: int = 80
) -> None:
    """Move the FakeClock from one due retry or round to the next until ``done()``."""
    for _ in range(limit):
        await settle(engine, limit=10)
        if await done():
            return
        nxt = await engine.dispatcher.next_due()
        assert nxt is not None and nxt > clock.now(), "nothing left to try"
        clock.set(nxt)
    raise AssertionError("not done after the rounds allowed")


def status_is(db: Database, nid: int, *statuses: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await notification(db, nid))["status"] in statuses

    return check


# -- the tester's outage: mail down, SMS 500, voice hanging ---------------------------------


async def test_an_alert_failed_on_every_channel_is_tried_until_the_mail_server_is_back(
    engine: Engine,
    clock: FakeClock,
    http_sink: HttpSink,
    smtp_sink: SmtpSink,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    incident_id, release, deadline_step = await declare(engine, clock)
    gateway = TricklingGateway()  # the voice gateway: answers a byte at a time, for ever
    try:
        engine.cfg.channels["voice"] = f"json://127.0.0.1:{gateway.port}/voice?:to={{phone}}"
        engine.dispatcher.sender.timeout = 1.0  # real seconds: a network send runs on real time
        smtp_sink.fail_next(10_000, DOWN)
        http_sink.fail_next(10_000)
        mails_before = len(smtp_sink.messages)
        nid = await put(
            db, clock.now(), "wang-fang", ["sms", "voice", "email"], kind="deadline",
            incident_id=incident_id, obligation_id=release, step_id=deadline_step,
        )  # fmt: skip
        engine.dispatcher.wake()

        # 1. The first round fails on every channel: failed — and not final.
        await run_until(engine, clock, status_is(db, nid, "failed"))
        row = await notification(db, nid)
        assert row["rounds"] == 1 and row["sent_channel"] is None
        retry_at = _at(row["retry_at"])
        assert timedelta(seconds=7) <= retry_at - clock.now() <= timedelta(seconds=13)
        assert [(a["channel"], a["outcome"]) for a in await attempts(db, nid)] == (
            [("sms", "error")] * 3 + [("voice", "error")] + [("email", "error")] * 3
        )
        [shown] = [n for n in await queries.notifications(db, engine.cfg, incident_id)
                   if n["id"] == nid]  # fmt: skip
        assert shown["status"] == "failed" and shown["rounds_failed"] == 1
        assert shown["retry_at"] is not None
        assert shown["delivery_message"].startswith("所有渠道均未送达,将于 ")
        assert shown["delivery_message_en"].startswith("failed on every channel, retrying at ")

        # 2. Twenty minutes of outage: tried again and again, each round over every channel;
        # the administrators were told once, on each of their channels, not once per round.
        await run_until(engine, clock, elapsed(clock, 20 * M))
        row = await notification(db, nid)
        assert row["status"] in ("failed", "queued") and row["rounds"] >= 5
        told = await db.fetchall("SELECT * FROM notifications WHERE kind = 'watchdog' ORDER BY id")
        assert [(t["person_id"], t["channels"]) for t in told] == [
            ("admin-liu", '["email"]'),
            ("admin-liu", '["sms"]'),
        ]
        assert all(t["status"] in ("failed", "queued") and t["rounds"] >= 5 for t in told)
        failed = await db.fetchall(
            "SELECT data FROM audit_log WHERE action = 'notification.failed'"
        )
        assert sorted(json.loads(f["data"])["notification"] for f in failed) == sorted(
            [nid, *(t["id"] for t in told)]
        )
        assert gateway.requests >= 5  # the voice gateway was tried in every round

        # 3. The mail server comes back: the next round delivers by email — to the person and
        # to the administrator; the administrator's SMS copy is then tried no more.
        smtp_sink.heal()
        await run_until(engine, clock, status_is(db, nid, "sent"))
        row = await notification(db, nid)
        assert row["sent_channel"] == "email" and row["retry_at"] is None
        await run_until(engine, clock, lambda: _settled(db, [t["id"] for t in told]))
        told = await db.fetchall("SELECT * FROM notifications WHERE kind = 'watchdog' ORDER BY id")
        assert [(t["status"], t["retry_ended"]) for t in told] == [
            ("sent", None),
            ("failed", "delivered on another channel"),
        ]
        mails = smtp_sink.envelopes[mails_before:]
        assert sorted(r for m in mails for r in m.rcpt_tos) == [
            "it@example.gov.cn",
            "wangfang@example.gov.cn",
        ]
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 3  # the first failure of each message, not one per round
        assert any(
            f"notification {nid} to wang-fang (王芳) delivered via email after" in r.getMessage()
            for r in caplog.records
        )
    finally:
        gateway.close()


def elapsed(clock: FakeClock, span: timedelta) -> Callable[[], Awaitable[bool]]:
    """Done once the clock has moved ``span`` on from now."""
    start = clock.now()

    async def check() -> bool:
        return clock.now() - start >= span

    return check


async def _settled(db: Database, ids: list[int]) -> bool:
    marks = ",".join("?" * len(ids))
    row = await db.fetchone(
        f"SELECT COUNT(*) FROM notifications WHERE id IN ({marks})"
        " AND (status IN ('queued', 'sending') OR retry_at IS NOT NULL)",
        ids,
    )
    return row is not None and row[0] == 0


# -- tried no more once it no longer matters -------------------------------------------------


async def _acknowledge_another(engine: Engine, clock: FakeClock, ids: dict[str, Any]) -> None:
    """王芳 acknowledges another message about the same obligation (by email, which works)."""
    other = await put(
        engine.db, clock.now(), "wang-fang", ["email"], kind="deadline",
        incident_id=ids["incident"], obligation_id=ids["obligation"], step_id=ids["step"],
    )  # fmt: skip
    engine.dispatcher.wake()
    await run_until(engine, clock, status_is(engine.db, other, "sent"))
    nonce = (await notification(engine.db, other))["ack_nonce"]
    assert (await acknowledge(engine.db, clock, ack_token(SECRET, nonce)))[1]


async def _release(engine: Engine, clock: FakeClock, ids: dict[str, Any]) -> None:
    await ops_of(engine).record_release(
        ids["incident"], RecordRelease(published_at=clock.now(), url="https://example.gov.cn/1"),
        "test",
    )  # fmt: skip


async def _close(engine: Engine, clock: FakeClock, ids: dict[str, Any]) -> None:
    await ops_of(engine).close(ids["incident"], CloseIncident(reason="事件已处置完毕"), "test")


async def _later_alert(engine: Engine, clock: FakeClock, ids: dict[str, Any]) -> None:
    """A later step reaches 王芳 by email."""
    row = await engine.db.fetchone(
        "SELECT MAX(id) FROM steps WHERE obligation_id = ? AND id != ?",
        (ids["obligation"], ids["step"]),
    )
    assert row is not None and row[0] is not None
    later = await put(
        engine.db, clock.now(), "wang-fang", ["email"], kind="repeat",
        incident_id=ids["incident"], obligation_id=ids["obligation"], step_id=row[0],
    )  # fmt: skip
    engine.dispatcher.wake()
    await run_until(engine, clock, status_is(engine.db, later, "sent"))


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (_acknowledge_another, "acknowledged"),
        (_release, "obligation met"),
        (_close, "incident closed"),
        (_later_alert, "a later alert was delivered"),
    ],
)
async def test_a_failed_alert_is_tried_no_more_once_it_no_longer_matters(
    engine: Engine,
    clock: FakeClock,
    http_sink: HttpSink,
    db: Database,
    event: Callable[[Engine, FakeClock, dict[str, Any]], Awaitable[None]],
    why: str,
) -> None:
    incident_id, release, deadline_step = await declare(engine, clock)
    engine.cfg.alerts.attempts_per_channel = 1
    engine.cfg.alerts.admins = []  # only the message under test in the outbox
    http_sink.fail_next(10_000)  # SMS down
    nid = await put(
        db, clock.now(), "wang-fang", ["sms"], kind="deadline",
        incident_id=incident_id, obligation_id=release, step_id=deadline_step,
    )  # fmt: skip
    engine.dispatcher.wake()
    await run_until(engine, clock, status_is(db, nid, "failed"))
    tries = len(await attempts(db, nid))

    await event(engine, clock, {"incident": incident_id, "obligation": release,
                                "step": deadline_step})  # fmt: skip
    [shown] = [n for n in await queries.notifications(db, engine.cfg, incident_id)
               if n["id"] == nid]  # fmt: skip
    assert shown["retry_at"] is None and shown["retry_ended"] == why  # shown so at once
    assert "不再重试" in shown["delivery_message"]
    clock.set(_at((await notification(db, nid))["retry_at"]) + M)
    await settle(engine)

    row = await notification(db, nid)
    assert (row["status"], row["retry_at"], row["retry_ended"]) == ("failed", None, why)
    assert len(await attempts(db, nid)) == tries  # not tried again
    ended = await db.fetchall(
        "SELECT data FROM audit_log WHERE action = 'notification.retries_ended'"
    )
    assert [json.loads(e["data"]) for e in ended] == [
        {"notification": nid, "person": "wang-fang", "why": why}
    ]


# -- the rounds: back-off, capped ------------------------------------------------------------


async def test_rounds_back_off_up_to_the_configured_cap_and_tell_the_admins_once(
    engine: Engine, clock: FakeClock, smtp_sink: SmtpSink, db: Database
) -> None:
    engine.cfg.alerts.attempts_per_channel = 1
    engine.cfg.alerts.failed_retry_max = timedelta(seconds=60)
    smtp_sink.fail_next(10_000, DOWN)
    nid = await put(db, clock.now(), "admin-liu", ["email"], kind="watchdog")
    engine.dispatcher.wake()
    waits: list[float] = []
    for _ in range(8):
        await run_until(engine, clock, status_is(db, nid, "failed"))
        row = await notification(db, nid)
        waits.append((_at(row["retry_at"]) - clock.now()).total_seconds())
        clock.set(_at(row["retry_at"]))
    # retry_base (10 s) doubling, with jitter (±25 %), never above failed_retry_max (60 s).
    assert 7.5 <= waits[0] <= 12.5 and 15 <= waits[1] <= 25 and 30 <= waits[2] <= 50
    assert all(45 <= w <= 60 for w in waits[3:]), waits
    row = await notification(db, nid)
    assert row["rounds"] == 8
    assert [a["outcome"] for a in await attempts(db, nid)] == ["error"] * 8  # one per round
    # A message about the service begets no other; told once (audit), not once per round.
    assert (await db.fetchone("SELECT COUNT(*) FROM notifications"))[0] == 1  # type: ignore[index]
    failed = await db.fetchall("SELECT * FROM audit_log WHERE action = 'notification.failed'")
    assert len(failed) == 1


def test_the_cap_is_a_setting_with_bounds(cfg: Config) -> None:
    assert cfg.alerts.failed_retry_max == timedelta(minutes=5)  # config/responder.toml
    with pytest.raises(ValueError, match="failed_retry_max"):
        type(cfg.alerts).model_validate({"failed_retry_max": "2h"})


# -- a channel that works again is used at once -------------------------------------------


async def test_a_channel_that_works_again_is_used_at_once_for_what_waits_on_it(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink, db: Database
) -> None:
    engine.cfg.alerts.admins = []
    # A message waiting for its next round after failing on its only channel (email) ...
    smtp_sink.fail_next(10_000, DOWN)
    engine.cfg.alerts.attempts_per_channel = 1
    waiting_round = await put(db, clock.now(), "zhao-min", ["email"], kind="reminder")
    engine.dispatcher.wake()
    await run_until(engine, clock, status_is(db, waiting_round, "failed"))
    # ... and one waiting to try the SMS gateway again after its 500.
    engine.cfg.alerts.attempts_per_channel = 3
    http_sink.fail_next(1)
    waiting_retry = await put(db, clock.now(), "li-qiang", ["sms"], kind="reminder")
    engine.dispatcher.wake()
    await settle(engine)
    row = await notification(db, waiting_retry)
    assert row["status"] == "queued" and _at(row["next_attempt_at"]) > clock.now()
    assert _at((await notification(db, waiting_round))["retry_at"]) > clock.now()

    # Both channels work again; one message on each goes through: what waited goes with them,
    # the clock standing still.
    smtp_sink.heal()
    for person, channel in (("chen-jing", "email"), ("wu-gang", "sms")):
        await put(db, clock.now(), person, [channel], kind="reminder")
    engine.dispatcher.wake()
    for nid in (waiting_round, waiting_retry):
        async with asyncio.timeout(10):
            while (await notification(db, nid))["status"] != "sent":  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    assert (await notification(db, waiting_round))["sent_channel"] == "email"


# -- finding 14: the administrators' alarm is not queued behind the backlog it is about ------


async def test_alarms_and_breach_alerts_are_claimed_before_a_backlog_of_reminders(
    engine: Engine, clock: FakeClock, db: Database
) -> None:
    """During a catch-up of 100,000 messages the administrators' "alerts are late" was raised
    at ~150 s and arrived at 211 s, nearly last: the claim took the oldest first.  Now the
    service's alarms, then breach alerts, go first, however many reminders were queued before
    them."""
    engine.dispatcher.slots = 4
    now = clock.now()

    def backlog(tx: sqlite3.Connection) -> tuple[int, int]:
        for i in range(300):
            outbox.queue(
                tx, SECRET, incident_id=None, obligation_id=None, step_id=None,
                person_id="zhao-min", channels=["sms"], kind="reminder", context={},
                now=now - timedelta(seconds=300 - i),
            )  # fmt: skip
        breach = outbox.queue(
            tx, SECRET, incident_id=None, obligation_id=None, step_id=None,
            person_id="wang-fang", channels=["sms"], kind="deadline", context={}, now=now,
        )  # fmt: skip
        alarm = outbox.queue(
            tx, SECRET, incident_id=None, obligation_id=None, step_id=None,
            person_id="admin-liu", channels=["sms"], kind="watchdog", context={}, now=now,
        )  # fmt: skip
        return breach, alarm

    breach, alarm = await db.transact(backlog)
    engine.dispatcher.wake()
    await settle(engine, limit=60)
    order = [
        r[0]
        for r in await db.fetchall("SELECT notification_id FROM attempts ORDER BY id")
        if r[0] >= breach - 300
    ]
    assert len(order) == 302
    assert order.index(alarm) < 4 and order.index(breach) < 4  # the first claim, of four slots


async def test_a_catch_up_for_a_breached_obligation_goes_before_reminders(
    engine: Engine, clock: FakeClock, db: Database
) -> None:
    """A breached obligation's messages are urgent whatever their kind.  With a rule set whose
    deadline step speaks to the head only, the spokesperson's reminders missed during downtime
    across the deadline arrive as one 'catch_up' — about an obligation breached at that very
    moment — which must not wait behind other reminders."""
    rules = next(r for r in engine.cfg.rule_sets if r.id == "gbf-2016-80")
    steps = tuple(
        s.model_copy(update={"audience": ("head@lead",)}) if s.name == "deadline" else s
        for s in rules.escalations["default"]
    )
    engine.cfg.rule_sets[engine.cfg.rule_sets.index(rules)] = rules.model_copy(
        update={"escalations": {**rules.escalations, "default": steps}}
    )
    _, release, _ = await declare(engine, clock)
    await engine.stop()  # down for five hours, across the deadline
    clock.advance(5 * 60 * M)
    restarted = Engine(db, engine.cfg, clock, SECRET)
    await restarted.start()
    try:
        await settle(restarted)
    finally:
        await restarted.stop()
    rows = await db.fetchall(
        "SELECT person_id, kind, priority FROM notifications WHERE obligation_id = ?"
        " AND created_at = (SELECT MAX(created_at) FROM notifications) ORDER BY person_id",
        (release,),
    )
    told = {(r["person_id"], r["kind"]) for r in rows}
    # The head hears of the breach; the spokesperson and the duty officer get the reminders
    # they missed, which are about a breached obligation all the same.
    assert {("wang-fang", "deadline"), ("li-qiang", "catch_up"), ("chen-jing", "reminder")} <= told
    assert {r["priority"] for r in rows} == {outbox.BREACH}
