"""The alert engine's behaviour over hours of escalation, on the FakeClock: a restart after
downtime, acknowledgements, drills, the exact sequence of steps over 30 hours, and the watchdog.

Messages really go out through apprise to the SMTP and HTTP sinks of :mod:`tests.sinks`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from responder import auth
from responder.ack import acknowledge
from responder.clock import FakeClock
from responder.config import Config
from responder.engine.runner import Engine
from responder.engine.watchdog import REMIND, Watchdog
from responder.models import DeclareIncident, RecordRelease
from responder.ops import Ops
from responder.secret import ack_token
from responder.store import Database
from responder.timeutil import from_db, to_db
from tests.engine_helpers import SECRET, ops_of, quiet, settle
from tests.sinks import HttpSink, SmtpSink

pytest_plugins = ["tests.engine_fixtures"]

H = timedelta(hours=1)
M = timedelta(minutes=1)
D = timedelta(days=1)


def declaration(clock: FakeClock, occurred_ago: timedelta, **extra: Any) -> DeclareIncident:
    fields: dict[str, Any] = {
        "title": "江城化工园区储罐爆炸",
        "category": "accident",
        "level": "II",
        "occurred_at": clock.now() - occurred_ago,
        "lead_unit": "emergency",
        **extra,
    }
    return DeclareIncident(**fields)


async def obligation_id(db: Database, incident_id: str, kind: str) -> int:
    row = await db.fetchone(
        "SELECT id FROM obligations WHERE incident_id = ? AND kind = ?", (incident_id, kind)
    )
    assert row is not None
    return int(row[0])


def _at(value: str | None) -> datetime:
    t = from_db(value)
    assert t is not None
    return t


# -- 6. a restart after downtime -----------------------------------------------------------


async def test_restart_after_three_hours_fires_what_fell_due_once_collapsed(
    db: Database, wired: Config, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    t0 = clock.now()
    first = Engine(db, wired, clock, SECRET)
    await first.start()
    try:
        # A: release due at T+4h — at T+3h its T-2h and T-1h reminders have fallen due.
        a = await ops_of(first).declare(declaration(clock, 1 * H, title="A"), "test")
        # B: release due at T+3h — at T+3h everything up to its deadline has fallen due.
        b = await ops_of(first).declare(declaration(clock, 2 * H, title="B", level="I"), "test")
        await settle(first)
    finally:
        await first.stop()
    at_t0 = await db.fetchall("SELECT id, status FROM notifications ORDER BY id")
    assert at_t0 and all(r["status"] == "sent" for r in at_t0)
    fired_t0 = {
        r["id"]: r["fired_at"]
        for r in await db.fetchall("SELECT id, fired_at FROM steps WHERE status = 'fired'")
    }
    requests_t0, mails_t0 = len(http_sink.requests), len(smtp_sink.messages)

    clock.advance(3 * H)  # the service is down for three hours
    t3 = clock.now()
    second = Engine(db, wired, clock, SECRET)
    await second.start()
    try:
        await settle(second)
    finally:
        await second.stop()

    # Due steps fired at once (at T+3h), each exactly once; the first run's were not redone.
    steps = await db.fetchall(
        "SELECT s.*, o.incident_id AS inc, o.kind AS ob FROM steps s"
        " JOIN obligations o ON o.id = s.obligation_id ORDER BY s.id"
    )
    for s in steps:
        if s["id"] in fired_t0:
            assert s["fired_at"] == fired_t0[s["id"]] == to_db(t0)
        elif _at(s["due_at"]) <= t3:
            assert (s["status"], s["fired_at"]) == ("fired", to_db(t3)), s["name"]
        else:
            assert s["status"] == "pending", s["name"]
    caught_up = {
        (s["inc"], s["ob"]): [x["name"] for x in steps if x["obligation_id"] == s["obligation_id"]]
        for s in steps
        if s["fired_at"] == to_db(t3)
    }
    assert caught_up == {
        (a, "authoritative_release"): ["declared", "T-2h", "T-1h", "T-30m", "deadline"],
        (b, "authoritative_release"): ["declared", "T-2h", "T-1h", "T-30m", "deadline", "repeat"],
    }
    fired: Counter[tuple[str, str, str]] = Counter()
    for entry in await db.fetchall(
        "SELECT subject, data FROM audit_log WHERE action = 'steps.fired'"
    ):
        data = json.loads(entry["data"])
        fired.update((entry["subject"], data["obligation"], name) for name in data["steps"])
    assert set(fired.values()) == {1}  # no step fired twice
    fired_names = Counter(s["name"] for s in steps if s["status"] == "fired")
    assert fired_names == {"declared": 4, "T-2h": 2, "T-1h": 2, "T-30m": 1, "deadline": 1}

    # One catch-up message per (person, obligation); the breach to every channel of each person.
    new = await db.fetchall(
        "SELECT n.*, o.incident_id AS inc, o.kind AS ob FROM notifications n"
        " LEFT JOIN obligations o ON o.id = n.obligation_id WHERE n.created_at = ?",
        (to_db(t3),),
    )
    assert all(n["status"] == "sent" for n in new)
    alarms = [n for n in new if n["kind"] == "watchdog"]
    if db.dialect == "sqlite":
        assert not alarms  # one process, restarted: a healthy catch-up is no alarm
    else:  # replicas: nobody fired for three hours, so every replica was down — say so
        assert {n["person_id"] for n in alarms} == set(wired.alerts.admins)
        assert all("所有副本曾停止运行" in json.loads(n["context"])["action"] for n in alarms)
    sent = new  # what the sinks received, the alarm included
    new = [n for n in new if n["kind"] != "watchdog"]
    per: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for n in new:
        per[(n["inc"], n["ob"], n["person_id"])].append(n)
    a_release = {p: ns for (inc, _, p), ns in per.items() if inc == a}
    assert sorted(a_release) == ["chen-jing", "li-qiang", "wang-fang"]
    for person_id, ns in a_release.items():
        assert [len(json.loads(n["channels"])) for n in ns] == [3]  # one message, failover
        context = json.loads(ns[0]["context"])
        if person_id == "chen-jing":  # the duty officer is told at T-1h only
            assert (ns[0]["kind"], context["collapsed"]) == ("reminder", [])
        else:
            assert (ns[0]["kind"], context["collapsed"]) == ("catch_up", ["T-2h", "T-1h"])
    b_release = {p: ns for (inc, _, p), ns in per.items() if inc == b}
    assert sorted(b_release) == ["chen-jing", "li-qiang", "wang-fang", "wu-gang", "zhou-hua"]
    for person_id, ns in b_release.items():
        person = wired.person(person_id)
        assert person is not None
        channels = [json.loads(n["channels"]) for n in ns]
        assert all(len(c) == 1 for c in channels)
        assert sorted(c[0] for c in channels) == sorted(person.channels)
        assert {n["kind"] for n in ns} == {"deadline"}
    assert not [k for k in per if k[1] == "press_conference"]

    # The breach opened the accountability record, once.
    records = await db.fetchall("SELECT * FROM accountability_records")
    assert [(r["incident_id"], r["unit"], r["responsible_person"]) for r in records] == [
        (b, "emergency", "wang-fang")
    ]
    ob = await db.fetchone(
        "SELECT status, breached_at, deadline FROM obligations WHERE id = ?",
        (await obligation_id(db, b, "authoritative_release"),),
    )
    assert ob is not None and ob["status"] == "breached" and ob["breached_at"] == ob["deadline"]
    # Exactly the new notifications went out after the restart (email copies included).
    new_http = sum(1 for n in sent if n["sent_channel"] != "email")
    new_mail = sum(1 for n in sent if n["sent_channel"] == "email")
    assert len(http_sink.requests) - requests_t0 == new_http
    await smtp_sink.wait_for(mails_t0 + new_mail)
    assert len(smtp_sink.messages) - mails_t0 == new_mail


# -- 7. acknowledgement ----------------------------------------------------------------------


async def _repeats_to(db: Database, ob_id: int, since: datetime) -> Counter[str]:
    rows = await db.fetchall(
        "SELECT person_id FROM notifications WHERE obligation_id = ? AND kind = 'repeat'"
        " AND created_at > ?",
        (ob_id, to_db(since)),
    )
    return Counter(r["person_id"] for r in rows)


async def test_acknowledging_stops_repeats_to_that_person_only_until_the_release(
    engine: Engine, clock: FakeClock, db: Database
) -> None:
    incident_id = await ops_of(engine).declare(declaration(clock, timedelta(0)), "test")
    await settle(engine)  # the 'declared' step fires now, not collapsed into a later catch-up
    release = await obligation_id(db, incident_id, "authoritative_release")
    for _ in range(10):  # to the deadline (T+5h) in 30-minute strides
        clock.advance(30 * M)
        await settle(engine)
    breach = await db.fetchall(
        "SELECT * FROM notifications WHERE obligation_id = ? AND kind = 'deadline'"
        " AND person_id = 'wang-fang' ORDER BY id",
        (release,),
    )
    assert len(breach) == 3  # voice, sms, email
    everyone = {"wang-fang", "li-qiang", "chen-jing", "zhou-hua", "wu-gang"}

    clock.advance(30 * M)  # T+5.5h: the first repeat, to everyone
    await settle(engine)
    assert set(await _repeats_to(db, release, clock.now() - M)) == everyone

    token = ack_token(SECRET, breach[1]["ack_nonce"])
    row, fresh = await acknowledge(db, clock, token)
    assert fresh and row["acked_at"] == to_db(clock.now())
    assert (await acknowledge(db, clock, token))[1] is False  # a second tap changes nothing

    for _ in range(3):  # T+6h, T+6.5h, T+7h: everyone else, every 30 minutes
        since = clock.now()
        clock.advance(30 * M)
        await settle(engine)
        assert await _repeats_to(db, release, since) == dict.fromkeys(everyone - {"wang-fang"}, 1)

    await ops_of(engine).record_release(
        incident_id, RecordRelease(published_at=clock.now(), url="https://example.gov.cn/1"), "test"
    )
    since = clock.now()
    for _ in range(6):
        clock.advance(30 * M)
        await settle(engine)
    assert await _repeats_to(db, release, since) == {}
    acked = await db.fetchall("SELECT * FROM audit_log WHERE action = 'notification.acknowledged'")
    assert len(acked) == 1 and acked[0]["actor"] == "person:wang-fang"


async def test_acknowledging_a_reminder_before_the_breach_does_not_silence_repeats(
    engine: Engine, clock: FakeClock, db: Database
) -> None:
    """ "We are on it" at T-2h is not an answer to the breach: repeats still reach that person."""
    incident_id = await ops_of(engine).declare(declaration(clock, timedelta(0)), "test")
    await settle(engine)  # the 'declared' step fires now, not collapsed into a later catch-up
    release = await obligation_id(db, incident_id, "authoritative_release")
    clock.advance(3 * 60 * M)  # T+3h: the T-2h reminder
    await settle(engine)
    reminder = await db.fetchone(
        "SELECT * FROM notifications WHERE obligation_id = ? AND kind = 'reminder'"
        " AND person_id = 'wang-fang'",
        (release,),
    )
    assert reminder is not None
    await acknowledge(db, clock, ack_token(SECRET, reminder["ack_nonce"]))
    for _ in range(5):  # to T+5.5h: the breach and the first repeat
        clock.advance(30 * M)
        await settle(engine)
    assert (await _repeats_to(db, release, clock.now() - M))["wang-fang"] == 1


async def test_acknowledging_cancels_a_repeat_still_waiting_for_a_retry(
    engine: Engine, clock: FakeClock, db: Database, http_sink: HttpSink
) -> None:
    incident_id = await ops_of(engine).declare(declaration(clock, 5 * H), "test")  # breached now
    await settle(engine)
    release = await obligation_id(db, incident_id, "authoritative_release")
    first = await db.fetchone(
        "SELECT * FROM notifications WHERE obligation_id = ? AND person_id = 'wu-gang'"
        " AND status = 'sent' ORDER BY id LIMIT 1",
        (release,),
    )
    assert first is not None
    http_sink.fail_next(100)  # every sms fails from now on: repeats wait for retries
    clock.advance(30 * M)
    await settle(engine)
    waiting = await db.fetchone(
        "SELECT * FROM notifications WHERE obligation_id = ? AND person_id = 'wu-gang'"
        " AND kind = 'repeat'",
        (release,),
    )
    assert waiting is not None and waiting["status"] == "queued" and waiting["attempt"] == 1
    await acknowledge(db, clock, ack_token(SECRET, first["ack_nonce"]))
    after = await db.fetchone("SELECT status FROM notifications WHERE id = ?", (waiting["id"],))
    assert after is not None and after["status"] == "cancelled"
    others = await db.fetchall(
        "SELECT status FROM notifications WHERE obligation_id = ? AND kind = 'repeat'"
        " AND person_id != 'wu-gang'",
        (release,),
    )
    assert others and all(r["status"] == "queued" for r in others)


# -- 8. drills -------------------------------------------------------------------------------


def _mail_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return f"{message['subject']}\n{body.get_content()}"


async def test_every_message_of_a_drill_says_it_is_a_drill(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink
) -> None:
    await ops_of(engine).declare(
        declaration(clock, 5 * H, title="演练:危化品泄漏", level="I", drill=True), "test"
    )
    for _ in range(40):  # 20 hours
        await settle(engine)
        clock.advance(30 * M)
    await settle(engine)
    bodies: dict[str, list[str]] = defaultdict(list)
    for r in http_sink.requests:
        bodies[r.path.strip("/")].append(f"{r.payload.get('title', '')}\n{r.payload['message']}")
    for m in await smtp_sink.wait_for(1):
        bodies["email"].append(_mail_text(m))
    assert {k: len(v) > 0 for k, v in bodies.items()} == dict.fromkeys(
        ("sms", "voice", "chat", "email"), True
    )
    for channel, texts in bodies.items():
        for text in texts:
            assert "演练" in text or "drill" in text.lower(), (channel, text)


# -- 9. thirty hours of escalation in a few seconds -------------------------------------------


async def test_thirty_hours_of_escalation_fire_exactly_on_time(
    engine: Engine, clock: FakeClock, db: Database
) -> None:
    started = time.monotonic()
    t0 = clock.now()
    incident_id = await ops_of(engine).declare(declaration(clock, timedelta(0)), "test")
    await settle(engine)
    for _ in range(30 * 12):
        clock.advance(5 * M)
        await settle(engine)
    assert clock.now() == t0 + 30 * H

    def expected(deadline: timedelta) -> list[tuple[str, timedelta]]:
        out = [("declared", timedelta(0)), ("T-2h", deadline - 2 * H), ("T-1h", deadline - H)]
        out += [("T-30m", deadline - 30 * M), ("deadline", deadline)]
        at = deadline + 30 * M
        while at <= 30 * H:
            out.append(("repeat", at))
            at += 30 * M
        return out

    for kind, deadline in (("authoritative_release", 5 * H), ("press_conference", 24 * H)):
        steps = await db.fetchall(
            "SELECT s.* FROM steps s JOIN obligations o ON o.id = s.obligation_id"
            " WHERE o.incident_id = ? AND o.kind = ? ORDER BY s.fired_at, s.id",
            (incident_id, kind),
        )
        fired = [(s["name"], _at(s["fired_at"]) - t0) for s in steps if s["status"] == "fired"]
        assert fired == expected(deadline), kind
        assert all(s["fired_at"] == s["due_at"] for s in steps if s["status"] == "fired")
        pending = [(s["name"], _at(s["due_at"]) - t0) for s in steps if s["status"] == "pending"]
        assert pending == [("repeat", 30 * H + 30 * M)]
        # Each fired step told its audience at that very moment.
        told = await db.fetchall(
            "SELECT DISTINCT n.created_at FROM notifications n"
            " JOIN obligations o ON o.id = n.obligation_id WHERE o.incident_id = ? AND o.kind = ?",
            (incident_id, kind),
        )
        assert sorted(_at(r[0]) - t0 for r in told) == [at for _, at in expected(deadline)]

    obligations = {
        r["kind"]: r
        for r in await db.fetchall(
            "SELECT * FROM obligations WHERE incident_id = ?", (incident_id,)
        )
    }
    press = obligations["press_conference"]
    assert press["status"] == "breached" and _at(press["breached_at"]) == t0 + 24 * H
    records = await db.fetchall("SELECT obligation_id FROM accountability_records ORDER BY id")
    assert [r[0] for r in records] == [
        obligations["authoritative_release"]["id"],
        press["id"],
    ]
    unsent = await db.fetchone("SELECT COUNT(*) FROM notifications WHERE status != 'sent'")
    assert unsent is not None and unsent[0] == 0
    # The engine kept up all along: no lag alert (the administrators' one message is the audit
    # log's daily head, at 08:00).
    lag = await db.fetchone("SELECT COUNT(*) FROM audit_log WHERE action = 'lag.alerted'")
    assert lag is not None and lag[0] == 0
    assert time.monotonic() - started < 15


# -- 10. the watchdog --------------------------------------------------------------------------


async def test_watchdog_tells_each_admin_once_per_half_hour_while_steps_are_late(
    db: Database, cfg: Config, clock: FakeClock, ops: Ops
) -> None:
    cfg.alerts.admins = ["admin-liu", "chen-jing"]
    watchdog = Watchdog(db, cfg, clock, SECRET)  # alone: no scheduler fires anything
    await ops.declare(declaration(clock, timedelta(0)), "test")  # 'declared' due now

    async def told() -> list[tuple[str, str]]:
        rows = await db.fetchall(
            "SELECT person_id, created_at FROM notifications WHERE kind = 'watchdog' ORDER BY id"
        )
        return [(r["person_id"], r["created_at"]) for r in rows]

    clock.advance(cfg.alerts.max_lag)  # late, but not beyond the bound
    lag = await watchdog.check()
    assert lag.steps == cfg.alerts.max_lag.total_seconds() and await told() == []

    clock.advance(1)
    first = clock.now()
    assert (await watchdog.check()).steps > cfg.alerts.max_lag.total_seconds()
    assert await told() == [("admin-liu", to_db(first)), ("chen-jing", to_db(first))]

    for _ in range(5):  # not again within the half hour
        clock.advance(5 * M)
        await watchdog.check()
    assert len(await told()) == 2

    clock.set(first + REMIND)
    await watchdog.check()
    assert await told() == [
        ("admin-liu", to_db(first)),
        ("chen-jing", to_db(first)),
        ("admin-liu", to_db(first + REMIND)),
        ("chen-jing", to_db(first + REMIND)),
    ]
    alerts = await db.fetchall("SELECT * FROM audit_log WHERE action = 'lag.alerted'")
    assert len(alerts) == 2
    queued = await db.fetchall("SELECT DISTINCT status, channels FROM notifications")
    assert {(r["status"], r["channels"]) for r in queued} >= {("queued", '["email", "sms"]')}


async def test_the_admins_hear_once_a_week_ahead_that_a_token_ends(
    db: Database, cfg: Config, clock: FakeClock
) -> None:
    """An integration's token given an end (token create --days) must be replaced before it
    stops the integration: the running watchdog tells every administrator once, a week ahead;
    not of a revoked token, nor of one made to last only a few days."""
    cfg.alerts.admins = ["admin-liu", "chen-jing"]
    now = clock.now()
    await auth.add_user(db, "platform", "duty_officer", None, now, "test")
    await auth.create_token(db, "platform", "city-platform", now, "t", now + 30 * D)
    _, revoked = await auth.create_token(db, "platform", "old", now, "t", now + 25 * D)
    await auth.revoke_token(db, revoked, now, "test")
    await auth.create_token(db, "platform", "forever", now, "t")
    woken: list[int] = []
    watchdog = Watchdog(db, cfg, clock, SECRET, on_queued=lambda: woken.append(1))
    task = asyncio.create_task(watchdog.run())

    async def told() -> list[Any]:  # (nothing sends here, so the lag alerts come too: not these)
        return await db.fetchall(
            "SELECT person_id, context FROM notifications WHERE kind = 'watchdog'"
            " AND context LIKE '%API 令牌%' ORDER BY id"
        )

    try:
        while task not in clock._asleep_at:  # noqa: ASYNC110 - until the watchdog first sleeps
            await asyncio.sleep(0.002)
        clock.advance(23 * D - M)  # the month-long token ends in a week and a minute
        await quiet(clock)
        assert await told() == [] and woken == []
        trial = clock.now() + 3 * D  # made to last three days: its maker knows
        await auth.create_token(db, "platform", "trial", clock.now(), "t", trial)
        clock.advance(2 * M)
        await quiet(clock)
        rows = await told()
        assert [r["person_id"] for r in rows] == ["admin-liu", "chen-jing"] and woken == [1]
        action = json.loads(rows[0]["context"])["action"]
        end = (now + 30 * D).astimezone(cfg.tz).strftime("%Y-%m-%d %H:%M +08:00")
        assert "city-platform" in action and f"将于 {end} 到期" in action
        for _ in range(3):  # once only
            clock.advance(D)
            await quiet(clock)
        assert len(await told()) == 2
        audit = await db.fetchall("SELECT subject FROM audit_log WHERE action = 'token.end_warned'")
        assert [r["subject"] for r in audit] == ["1"]
    finally:
        watchdog.stop()
        await task


async def test_running_watchdog_reports_a_stuck_scheduler_once_it_is_max_lag_late(
    db: Database, cfg: Config, clock: FakeClock, ops: Ops
) -> None:
    """The watchdog's own loop (which counts only work already due at its previous look, see
    the restart test above) still reports steps nobody fires, as soon as they are max_lag late."""
    woken: list[int] = []  # no scheduler: nothing will ever fire
    watchdog = Watchdog(db, cfg, clock, SECRET, on_queued=lambda: woken.append(1))
    task = asyncio.create_task(watchdog.run())
    try:
        while task not in clock._asleep_at:  # noqa: ASYNC110 - until the watchdog first sleeps
            await asyncio.sleep(0.002)
        clock.advance(3 * H)
        declared = clock.now()
        await ops.declare(declaration(clock, 5 * H), "test")  # every step due at once
        await quiet(clock)
        assert await db.fetchall("SELECT 1 FROM notifications") == []
        for _ in range(8):  # four minutes in 30-second checks
            clock.advance(30)
            await quiet(clock)
        rows = await db.fetchall("SELECT person_id, created_at FROM notifications")
        assert [r["person_id"] for r in rows] == ["admin-liu"] and woken == [1]
        late = _at(rows[0]["created_at"]) - declared
        assert cfg.alerts.max_lag < late <= cfg.alerts.max_lag + 30 * timedelta(seconds=1)
    finally:
        watchdog.stop()
        await task
