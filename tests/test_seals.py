"""Seals of evidence (``responder.reports.seal``) against a real SQLite file and the real
``responder verify-audit`` process: an empty column written into after sealing is found; the
changes the service itself makes after sealing (a retry round, an acknowledgement, a press
conference held, a correction reported, the incident closed) are not taken for tampering; and
seals made before empty columns were covered still verify."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from responder import ack
from responder.accountability import CorrectionReport, Decide
from responder.clock import FakeClock
from responder.engine.apprise_call import Outcome
from responder.engine.dispatcher import Dispatcher
from responder.engine.metrics import Metrics
from responder.models import (
    CloseIncident,
    DeclareIncident,
    PressConferenceHeld,
    RecordRelease,
    SchedulePressConference,
)
from responder.ops import Ops
from responder.reports import evidence, render, seal
from responder.secret import ack_token
from responder.store import Database, audit
from tests.test_accountability import fire_due
from tests.test_reports import cli

FIRE_SECRET = b"x" * 32  # the secret tests.test_accountability.fire_due queues messages with


def t(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00")


async def breached_and_decided(ops: Ops, clock: FakeClock) -> str:
    """An incident whose release was 2 h late, released, closed and decided: the decision
    sealed its evidence; the release duty is met (late) and no longer moves."""
    clock.set(t("2026-11-26T14:00"))
    iid = await ops.declare(
        DeclareIncident(title="储罐泄漏", category="accident", level="II",
                        occurred_at=t("2026-11-26T07:00"), lead_unit="emergency"),
        "duty",
    )  # fmt: skip
    await fire_due(ops)
    await ops.record_release(iid, RecordRelease(published_at=clock.now()), "duty")
    await ops.close(iid, CloseIncident(reason="处置完毕"), "duty")
    row = await ops.db.fetchone("SELECT id FROM accountability_records")
    await ops.decide(row[0], Decide(action="accept"), "rev")
    return iid


async def test_a_value_written_into_a_column_empty_when_sealed_is_found(
    ops: Ops, clock: FakeClock, db_path: Path
) -> None:
    """Issue 16: a seal left out every column that was NULL when it was made, so a waiver
    written afterwards into the late duty (waived_at, waived_reason: empty when it was sealed)
    went unseen by verify-audit."""
    iid = await breached_and_decided(ops, clock)
    report = await render.incident_report(ops, iid, "rev")
    head = report["audit"]["head"]
    assert head
    await ops.db.close()
    assert cli(db_path, "verify-audit", "--expect", head).returncode == 0
    async with Database(str(db_path)) as edit:
        await edit.transact(
            lambda tx: tx.execute(
                "UPDATE obligations SET waived_at = met_at, waived_reason = '上级同意免除'"
                " WHERE kind = 'authoritative_release'"
            )
        )
    done = cli(db_path, "verify-audit", "--expect", head)
    assert done.returncode == 1, done.stdout
    assert "证据记录已被篡改" in done.stderr and "obligations:" in done.stderr


async def _fail_every_channel(dispatcher: Dispatcher, db: Database, clock: FakeClock) -> None:
    """Every queued message fails on each of its channels in turn: failed, next round planned."""
    failure = Outcome(ok=False, error="HTTP 503", same_channel_again=False)
    while claimed := await dispatcher.claim(100):
        await _record(dispatcher, db, claimed, failure, clock.now())


async def _deliver_all(dispatcher: Dispatcher, db: Database, clock: FakeClock) -> None:
    """The next rounds start, and every message gets through."""
    await dispatcher.next_rounds()
    while claimed := await dispatcher.claim(100):
        await _record(dispatcher, db, claimed, Outcome(ok=True), clock.now())


async def _record(
    dispatcher: Dispatcher, db: Database, claimed: list[Any], outcome: Outcome, now: datetime
) -> None:
    def record(tx: Any) -> None:
        for n in claimed:
            dispatcher.record_in(tx, n, outcome, now)
        if outcome.ok:
            dispatcher.bring_forward(tx, claimed[0].channel, now)

    await db.transact(record)


async def test_what_the_service_changes_after_a_seal_is_not_taken_for_tampering(
    ops: Ops, clock: FakeClock, db_path: Path
) -> None:
    """Reports sealed at each stage of an incident's life, then the life goes on: a message
    that failed on every channel is retried and delivered, acknowledged; a scheduled press
    conference is held (recorded after its deadline); the late release is recorded; the
    correction asked for is reported; the incident closes.  Every seal still verifies."""
    dispatcher = Dispatcher(ops.db, ops.cfg, clock, FIRE_SECRET, Metrics())
    clock.set(t("2026-11-26T14:00"))
    iid = await ops.declare(
        DeclareIncident(title="管道破裂", category="accident", level="II",
                        occurred_at=t("2026-11-26T07:00"), lead_unit="emergency"),
        "duty",
    )  # fmt: skip
    await fire_due(ops)
    await _fail_every_channel(dispatcher, ops.db, clock)
    failed = await ops.db.fetchone(
        "SELECT COUNT(*) FROM notifications WHERE status = 'failed' AND retry_at IS NOT NULL"
    )
    assert failed[0] >= 1
    await ops.schedule_press_conference(
        iid, SchedulePressConference(scheduled_at=t("2026-11-27T05:00"), venue="区政府"), "duty"
    )
    (rid,) = await ops.db.fetchone("SELECT id FROM accountability_records")
    await ops.decide(
        rid,
        Decide(action="change", measure="correction", reason="夜间无人值守",
               correction_required="建立夜间值班", correction_due_at=t("2026-12-20T17:00")),
        "rev",
    )  # fmt: skip
    heads = [(await render.incident_report(ops, iid, "rev"))["audit"]["head"]]

    # The next round gets through; a delivered message is acknowledged.
    clock.set(t("2026-11-26T16:00"))
    await _deliver_all(dispatcher, ops.db, clock)
    note = await ops.db.fetchone(
        "SELECT ack_nonce FROM notifications WHERE status = 'sent' ORDER BY id LIMIT 1"
    )
    await ack.acknowledge(ops.db, clock, ack_token(FIRE_SECRET, note[0]))
    heads.append((await render.incident_report(ops, iid, "rev"))["audit"]["head"])

    # Held before its deadline (13:00 next day) but recorded after it; the release, late.
    clock.set(t("2026-11-27T15:00"))
    await ops.press_conference_held(
        iid, PressConferenceHeld(held_at=t("2026-11-27T05:00"), principal_leader_spoke=True),
        "duty",
    )  # fmt: skip
    await ops.record_release(iid, RecordRelease(published_at=t("2026-11-26T16:00")), "duty")
    heads.append((await render.incident_report(ops, iid, "rev"))["audit"]["head"])

    clock.set(t("2026-12-10T10:00"))
    await ops.record_correction_report(
        rid, CorrectionReport(received_at=clock.now(), text="已建立夜间值班"), "rev"
    )
    await ops.close(iid, CloseIncident(reason="处置完毕"), "duty")
    heads.append((await render.incident_report(ops, iid, "rev"))["audit"]["head"])
    assert all(heads) and len(set(heads)) == 4

    assert await seal.check(ops.db.reader) == []
    await ops.db.close()
    for head in heads:
        done = cli(db_path, "verify-audit", "--expect", head)
        assert done.returncode == 0, done.stderr


def _left_out_before(table: str, row: Any) -> list[str]:
    """The columns a seal left out before empty columns were covered: every NULL one."""
    live, moving = seal.MOVING.get(table, (lambda r: False, frozenset()))
    out = {k for k in row.keys() if row[k] is None}
    out |= seal.ALWAYS_MOVING.get(table, frozenset())
    if live(row):
        out |= moving
    return sorted(out & set(row.keys()))


async def test_a_seal_made_before_empty_columns_were_covered_still_verifies(
    ops: Ops, clock: FakeClock, db_path: Path
) -> None:
    """A database sealed by the earlier version: its seals list the empty columns they left
    out, and verification reads that list, so verify-audit does not cry tampering."""
    iid = await breached_and_decided(ops, clock)
    rows = await evidence.read(ops.db, evidence.INCIDENT_SQL, iid)
    old = {
        f"{table}:{r['id']}": [seal._digest(r, _left_out_before(table, r)), _left_out_before(table, r)]
        for table, table_rows in rows.items()
        for r in table_rows
    }  # fmt: skip
    assert any("waived_at" in left for _, left in old.values())  # an old-style seal
    now = clock.now()
    await ops.db.transact(
        lambda tx: audit.append(tx, now, "rev", "report.made", iid,
                                {"report": "incident", "incident": iid, "sealed": old})
    )  # fmt: skip
    assert await seal.check(ops.db.reader) == []
    await ops.db.close()
    done = cli(db_path, "verify-audit")
    assert done.returncode == 0, done.stderr
    assert json.dumps(old)  # plain JSON, as it is stored


async def test_a_column_added_by_a_later_migration_keeps_older_seals_and_is_covered(
    ops: Ops, clock: FakeClock, db_path: Path
) -> None:
    """Migration 010 added ``notifications.carried_by``: a message sealed before had no such
    column.  Its seal (digest without the column) still verifies; a value written into the
    column afterwards is found."""
    iid = await breached_and_decided(ops, clock)
    rows = await evidence.read(ops.db, evidence.INCIDENT_SQL, iid)
    lone = [r for r in rows["notifications"] if r["carried_by"] is None]
    assert lone

    def before_010(r: Any) -> list[Any]:  # the row as the earlier version saw it
        left = seal._left_out("notifications", r)
        body = {k: r[k] for k in r.keys() if k != "carried_by"}
        return [seal._digest(_Row(body), left, "notifications"), left]

    old = {f"notifications:{r['id']}": before_010(r) for r in lone}
    now = clock.now()
    await ops.db.transact(
        lambda tx: audit.append(tx, now, "rev", "report.made", iid,
                                {"report": "incident", "incident": iid, "sealed": old})
    )  # fmt: skip
    assert await seal.check(ops.db.reader) == []
    target = lone[0]["id"]
    other = lone[-1]["id"] if len(lone) > 1 else None
    await ops.db.transact(
        lambda tx: tx.execute(
            "UPDATE notifications SET carried_by = ? WHERE id = ?", (other or target, target)
        )
    )
    problems = await seal.check(ops.db.reader)
    assert any(f"notifications:{target} was changed" in p for p in problems), problems


class _Row(dict):  # type: ignore[type-arg]
    """A row as a mapping with keys(), as the seal reads one."""
