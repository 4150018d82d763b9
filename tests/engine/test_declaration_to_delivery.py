"""The alert engine end to end, against a real SMTP server and a real HTTP sink.

Time is the FakeClock's: hours of escalation run in milliseconds.  What arrives at the sinks
is real: apprise renders and sends over sockets on 127.0.0.1.
"""

from __future__ import annotations

import json
from datetime import timedelta

from responder.clock import FakeClock
from responder.engine.runner import Engine
from responder.models import DeclareIncident, RecordRelease
from responder.store import Database
from tests.engine_helpers import ops_of, settle
from tests.sinks import HttpSink, SmtpSink

pytest_plugins = ["tests.engine_fixtures"]


async def test_late_declaration_catch_up_then_breach_then_release_stops_messages(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, smtp_sink: SmtpSink, db: Database
) -> None:
    occurred = clock.now() - timedelta(hours=4, minutes=59, seconds=50)
    incident_id = await ops_of(engine).declare(
        DeclareIncident(
            title="江城化工园区储罐爆炸",
            category="accident",
            level="II",
            occurred_at=occurred,
            lead_unit="emergency",
        ),
        "test",
    )
    await settle(engine)
    # At once: catch-up for the release (one per person), notice for the press conference.
    first = list(http_sink.requests)
    assert first, "no catch-up messages reached the HTTP sink"
    rows = await db.fetchall(
        "SELECT n.kind, o.kind AS ob FROM notifications n JOIN obligations o ON o.id = n.obligation_id"
    )
    assert {(r["kind"], r["ob"]) for r in rows} >= {("catch_up", "authoritative_release")}
    assert tuple(await db.fetchone("SELECT COUNT(*) FROM accountability_records")) == (0,)

    # Ten seconds later: the breach alert, at both sinks, and an accountability record.
    before_http, before_mail = len(http_sink.requests), len(smtp_sink.messages)
    clock.advance(10)
    await settle(engine)
    assert len(http_sink.requests) > before_http
    assert len(smtp_sink.messages) > before_mail
    record = await db.fetchone("SELECT * FROM accountability_records")
    assert record is not None and record["unit"] == "emergency"
    assert record["responsible_person"] == "wang-fang"
    breach_bodies = [r.payload.get("message", "") for r in http_sink.requests[before_http:]]
    assert any("已超过发布时限" in b for b in breach_bodies), breach_bodies

    # The release is recorded: no further message about that obligation, ever.
    await ops_of(engine).record_release(
        incident_id, RecordRelease(published_at=clock.now(), url="https://example.gov.cn/1"), "test"
    )
    await settle(engine)
    sent_after_release = await db.fetchone(
        "SELECT COUNT(*) FROM notifications n JOIN obligations o ON o.id = n.obligation_id"
        " WHERE o.kind = 'authoritative_release'"
    )
    clock.advance(timedelta(hours=3))
    await settle(engine)
    assert tuple(
        await db.fetchone(
            "SELECT COUNT(*) FROM notifications n JOIN obligations o ON o.id = n.obligation_id"
            " WHERE o.kind = 'authoritative_release'"
        )
    ) == tuple(sent_after_release)


async def test_repeats_every_30_minutes_until_met(
    engine: Engine, clock: FakeClock, db: Database
) -> None:
    await ops_of(engine).declare(
        DeclareIncident(
            title="暴雨",
            category="natural_disaster",
            level="I",
            occurred_at=clock.now(),
            lead_unit="emergency",
            drill=True,
        ),
        "test",
    )
    for _ in range(12):  # 6 hours in 30-minute strides
        clock.advance(timedelta(minutes=30))
        await settle(engine)
    repeats = await db.fetchall(
        "SELECT s.due_at FROM steps s JOIN obligations o ON o.id = s.obligation_id"
        " WHERE o.kind = 'authoritative_release' AND s.kind = 'repeat' AND s.status = 'fired'"
    )
    assert len(repeats) == 2  # deadline at +5 h; repeats at +5.5 h and +6 h
    pending = await db.fetchall(
        "SELECT COUNT(*) FROM steps WHERE kind = 'repeat' AND status = 'pending'"
    )
    assert pending[0][0] == 1  # only ever one next repeat per obligation (press conf still open)


async def test_a_declaration_already_past_its_deadline_fires_the_breach_on_record(
    engine: Engine, clock: FakeClock, http_sink: HttpSink, db: Database
) -> None:
    """Declared six hours after it occurred: the release is breached at declaration, and the
    catch-up step that tells everyone says so in the audit log (it said ``breached: false``,
    since the firing itself had nothing left to breach)."""
    incident_id = await ops_of(engine).declare(
        DeclareIncident(
            title="江城化工园区储罐爆炸",
            category="accident",
            level="II",
            occurred_at=clock.now() - timedelta(hours=6),
            lead_unit="emergency",
        ),
        "test",
    )
    await settle(engine)
    fired = {
        data["obligation"]: data
        for data in (
            json.loads(r["data"])
            for r in await db.fetchall(
                "SELECT data FROM audit_log WHERE action = 'steps.fired' AND subject = ?",
                (incident_id,),
            )
        )
    }
    assert fired["authoritative_release"]["breached"] is True
    assert fired["press_conference"]["breached"] is False
    assert http_sink.requests
