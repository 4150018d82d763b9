"""One message per person, incident and moment (issue 15, item 9).

What falls due for the same person and incident at the same moment — a declaration's release
and press conference, a late declaration's breach and notice — reaches them as ONE message
listing each deadline, through the real HTTP sink; each obligation keeps its own row, its
evidence and its acknowledgement.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from responder import ack
from responder.clock import FakeClock
from responder.engine import outbox
from responder.engine.runner import Engine
from responder.models import DeclareIncident
from responder.reports import evidence
from responder.secret import ack_token
from responder.store import Database
from tests.engine_helpers import SECRET, ops_of, settle
from tests.sinks import HttpSink

pytest_plugins = ["tests.engine_fixtures"]

WANG_FANG = "+8613800000001"  # head of the lead unit: told of both obligations


async def declare(engine: Engine, clock: FakeClock, ago: timedelta, title: str = "储罐爆炸") -> str:
    return await ops_of(engine).declare(
        DeclareIncident(
            title=title,
            category="accident",
            level="II",
            occurred_at=clock.now() - ago,
            lead_unit="emergency",
        ),
        "test",
    )


def sms_to(sink: HttpSink, phone: str, since: int = 0) -> list[str]:
    return [
        r.payload["message"]
        for r in sink.requests[since:]
        if r.path == "/sms" and r.payload.get("to") == phone
    ]


async def rows_of(db: Database, incident_id: str, person: str, since: int = 0) -> list[Any]:
    return await db.fetchall(
        "SELECT n.*, o.kind AS ob FROM notifications n JOIN obligations o ON o.id = n.obligation_id"
        " WHERE n.incident_id = ? AND n.person_id = ? AND n.id > ? ORDER BY n.id",
        (incident_id, person, since),
    )


async def test_a_declaration_sends_each_person_one_sms_listing_both_deadlines_and_one_ack_acks_both(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, db: Database
) -> None:
    incident_id = await declare(engine, clock, timedelta(minutes=5))
    await settle(engine)

    # Each person of the lead unit: one SMS, not one per obligation, naming both deadlines
    # in the configured zone (the release today, the press conference tomorrow).
    per_phone = Counter(
        r.payload["to"] for r in http_sink.requests if r.path == "/sms" and "to" in r.payload
    )
    assert per_phone and set(per_phone.values()) == {1}, per_phone
    (text,) = sms_to(http_sink, WANG_FANG)
    assert "发布权威信息截止" in text and "举行新闻发布会截止次日" in text, text
    assert "【超时】" not in text and len(text) <= 134, (len(text), text)

    rows = await rows_of(db, incident_id, "wang-fang")
    assert {r["ob"] for r in rows} == {"authoritative_release", "press_conference"}
    carrier = next(r for r in rows if r["carried_by"] is None)
    carried = next(r for r in rows if r["carried_by"] is not None)
    assert carried["carried_by"] == carrier["id"]
    assert carrier["status"] == carried["status"] == "sent"
    assert carried["sent_at"] == carrier["sent_at"] and carried["sent_channel"] == "sms"

    # Acknowledging the message acknowledges each obligation it told of.
    clock.advance(60)
    _, fresh = await ack.acknowledge(db, clock, ack_token(SECRET, carrier["ack_nonce"]))
    assert fresh
    rows = await rows_of(db, incident_id, "wang-fang")
    assert all(r["acked_at"] is not None for r in rows), [dict(r) for r in rows]

    # Each obligation's evidence shows she was told, when it was delivered, and her ack.
    for row in rows:
        found = await evidence.read(db, evidence.OBLIGATION_SQL, row["obligation_id"])
        said = [e["what"] for e in evidence.timeline(engine.cfg, found)]
        assert any("送达 王芳" in w for w in said), said
        assert any("王芳" in w and "确认收到" in w for w in said), said
        assert any(a["notification_id"] == carrier["id"] for a in found["attempts"])


async def test_a_late_declaration_merges_the_breach_and_the_notice_with_the_overdue_mark(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, db: Database
) -> None:
    incident_id = await declare(engine, clock, timedelta(hours=6))
    await settle(engine)
    # The breach goes on each channel at once: one SMS, telling of both duties.
    (text,) = sms_to(http_sink, WANG_FANG)
    assert text.startswith("【超时】"), text
    assert "发布权威信息截止" in text and "已超时1小时" in text and "举行新闻发布会截止" in text
    assert len(text) <= 201, (len(text), text)  # three UCS-2 segments, not two SMS of two
    rows = await rows_of(db, incident_id, "wang-fang")
    carriers = [r for r in rows if r["carried_by"] is None]
    assert {r["ob"] for r in carriers} == {"authoritative_release"}
    assert {r["priority"] for r in rows} == {outbox.BREACH}
    assert len(rows) == 2 * len(carriers)  # beside each, the press conference's row
    assert all(r["ob"] == "press_conference" for r in rows if r["carried_by"] is not None)


async def test_two_incidents_at_the_same_moment_are_not_merged(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, db: Database
) -> None:
    first = await declare(engine, clock, timedelta(minutes=5), "储罐爆炸")
    second = await declare(engine, clock, timedelta(minutes=5), "山体滑坡")
    await settle(engine)
    texts = sms_to(http_sink, WANG_FANG)
    assert len(texts) == 2, texts
    assert sorted("储罐爆炸" in t for t in texts) == [False, True]
    for incident_id in (first, second):
        rows = await rows_of(db, incident_id, "wang-fang")
        carriers = {r["id"] for r in rows if r["carried_by"] is None}
        assert len(carriers) == 1 and all(r["carried_by"] in carriers | {None} for r in rows)


async def test_who_acknowledged_a_breach_is_spared_its_repeats_but_told_other_news(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, db: Database
) -> None:
    # The release breached at once (repeats every 30 min: the next at +22 h, in 10 s), the
    # press conference's T-2h reminder due at +22 h too.
    incident_id = await declare(engine, clock, timedelta(hours=21, minutes=59, seconds=50))
    await settle(engine)
    rows = await rows_of(db, incident_id, "wang-fang")
    sms = next(r for r in rows if r["carried_by"] is None and r["sent_channel"] == "sms")
    clock.advance(5)
    await ack.acknowledge(db, clock, ack_token(SECRET, sms["ack_nonce"]))
    last = max(r["id"] for r in await db.fetchall("SELECT id FROM notifications"))
    before = len(http_sink.requests)

    clock.advance(5)  # +22 h: the release's repeat and the press conference's T-2h together
    await settle(engine)
    wang = await rows_of(db, incident_id, "wang-fang", last)
    assert {(r["ob"], r["kind"]) for r in wang} == {("press_conference", "reminder")}
    (text,) = sms_to(http_sink, WANG_FANG, before)
    assert "举行新闻发布会" in text and "发布权威信息" not in text, text
    # Who did not acknowledge hears both, in one message.
    li = await rows_of(db, incident_id, "li-qiang", last)
    assert {(r["ob"], r["kind"]) for r in li} == {
        ("authoritative_release", "repeat"),
        ("press_conference", "reminder"),
    }
    (text,) = sms_to(http_sink, "+8613800000002", before)
    assert text.startswith("【超时】") and "发布权威信息" in text and "举行新闻发布会" in text


async def test_the_incidents_evidence_counts_a_merged_message_once(
    engine: Engine, clock: FakeClock, http_sink: HttpSink
) -> None:
    """A reviewer reads 'messages N · delivered N': the messages people got, not one per duty
    they listed.  An obligation's own evidence still counts its news, carried or not."""
    iid = await declare(engine, clock, timedelta(minutes=5))
    await settle(engine)
    db = engine.db
    sent = len(http_sink.requests)
    carriers = await db.fetchall(
        "SELECT id FROM notifications WHERE incident_id = ? AND carried_by IS NULL", (iid,)
    )
    every = await db.fetchall("SELECT id FROM notifications WHERE incident_id = ?", (iid,))
    assert len(every) > len(carriers)  # some rows are carried
    whole = evidence.summary(engine.cfg, await evidence.read(db, evidence.INCIDENT_SQL, iid))
    assert whole["messages"] == whole["delivered"] == len(carriers) == sent
    for (ob,) in await db.fetchall("SELECT id FROM obligations WHERE incident_id = ?", (iid,)):
        own = evidence.summary(engine.cfg, await evidence.read(db, evidence.OBLIGATION_SQL, ob))
        told = await db.fetchall("SELECT id FROM notifications WHERE obligation_id = ?", (ob,))
        assert own["messages"] == own["delivered"] == len(told)
