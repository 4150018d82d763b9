"""Edges of the engine: one engine per database, a backlog larger than a batch, and a message
that a crash interrupted."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from responder.clock import FakeClock
from responder.config import Config, Unit
from responder.engine import fire
from responder.engine.dispatcher import Dispatcher, lease
from responder.engine.messages import render
from responder.engine.metrics import Metrics
from responder.engine.scheduler import Scheduler
from responder.errors import Conflict
from responder.models import DeclareIncident
from responder.ops import Ops
from responder.store import Database
from responder.store.lock import instance_lock
from tests.engine_helpers import SECRET


def test_a_second_engine_on_the_same_database_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = str(tmp_path / "r.sqlite3")
    with instance_lock(database):
        with pytest.raises(Conflict) as e, instance_lock(database):
            pass
        assert e.value.code == "already_running"
    with instance_lock(database):  # released on exit: a restart may take it
        pass


async def test_a_backlog_larger_than_a_batch_gives_one_message_per_person_and_obligation(
    db: Database, cfg: Config, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After downtime every obligation has several due steps; a batch boundary must not split
    them into two catch-up messages."""
    ops = Ops(db, cfg, clock)
    for i in range(6):
        await ops.declare(
            DeclareIncident(
                title=f"事件{i}", category="accident", level="II", occurred_at=clock.now(),
                lead_unit="emergency",
            ),
            "test",
        )  # fmt: skip
    clock.advance(timedelta(hours=4, minutes=40))  # declared, T-2h, T-1h, T-30m all due
    monkeypatch.setattr(
        "responder.engine.scheduler.BATCH", 5
    )  # smaller than one obligation's 4 steps × 2
    scheduler = Scheduler(db, cfg, clock, SECRET, Metrics(), lambda: None)
    await scheduler.fire_due()
    rows = await db.fetchall(
        "SELECT obligation_id, person_id, json_extract(channels, '$[0]') AS ch, COUNT(*) AS n"
        " FROM notifications GROUP BY obligation_id, person_id, ch"
    )
    assert rows and all(r["n"] == 1 for r in rows)
    assert await fire.due_steps(db, clock.now(), 5) == []


async def test_an_interrupted_send_counts_as_a_try(
    db: Database, cfg: Config, clock: FakeClock
) -> None:
    """A message that crashes the process every time must move on, not loop forever."""
    ops = Ops(db, cfg, clock)
    await ops.declare(
        DeclareIncident(
            title="x",
            category="accident",
            level="II",
            occurred_at=clock.now(),
            lead_unit="emergency",
        ),
        "test",
    )
    await Scheduler(db, cfg, clock, SECRET, Metrics(), lambda: None).fire_due()
    dispatcher = Dispatcher(db, cfg, clock, SECRET, Metrics())
    claimed = await dispatcher.claim(1)  # … and the process dies here
    assert len(claimed) == 1
    other = Dispatcher(db, cfg, clock, SECRET, Metrics())  # after a restart, or a replica
    if db.dialect == "postgresql":  # replicas: the claim is another's until its lease ends
        clock.advance(lease(cfg) - timedelta(seconds=1))
        assert await other.recover() == 0
        clock.advance(timedelta(seconds=1))
    assert await other.recover() == 1
    row = await db.fetchone("SELECT * FROM notifications WHERE id = ?", (claimed[0].id,))
    assert row["status"] == "queued" and row["attempt"] == 1
    attempt = await db.fetchone(
        "SELECT outcome FROM attempts WHERE notification_id = ?", (claimed[0].id,)
    )
    assert attempt["outcome"] == "unknown"
    assert json.loads(row["channels"])  # still has its channels to walk


async def test_form_gateways_get_the_message_and_the_idempotency_key() -> None:
    """Most Chinese SMS and voice platforms take a form post: form:// reaches them as fields."""
    from responder.engine.apprise_call import send, with_idempotency_key
    from tests.sinks import HttpSink

    async with HttpSink() as sink:
        url = with_idempotency_key(sink.form_url("sms", to="+8613800000001"), "42-sms")
        outcome = await asyncio.to_thread(send, url, "", "【II级重大】测试短信", "sms")
        assert outcome.ok, outcome.error
        (request,) = await sink.wait_for(1)
        assert request.form["message"] == "【II级重大】测试短信"
        assert request.form["to"] == "+8613800000001"
        assert request.headers["X-Responder-Notification"] == "42-sms"


async def test_a_wecom_robot_gets_the_chat_message_as_plain_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """apprise's WeCom robot posts msgtype "text": the chat markdown reached people as "####",
    "**" and "[确认收到](…)" — and a messenger could take the ")" into the link.  WeCom's server
    cannot run here: the plugin's address is pointed at the local sink, the rest is apprise's."""
    from apprise.plugins.wecombot import NotifyWeComBot

    from responder.engine.apprise_call import send
    from responder.engine.messages import render
    from tests.sinks import HttpSink

    ack_url = "https://yjxx.example.gov.cn/ack/" + "A" * 32
    message = render(
        "chat",
        "zh",
        {"step_kind": "deadline", "title": "江城化工园区储罐爆炸事故", "level": "II",
         "level_name": "重大", "obligation": "发布权威信息", "deadline": "2026-11-27 08:40 +08:00",
         "state": "due_now", "lead_unit": "区应急管理局", "action": "请立即发布权威信息",
         "ack_url": ack_url},
    )  # fmt: skip
    assert "**" in message.body and f"]({ack_url})" in message.body  # markdown for the others
    async with HttpSink() as sink:
        monkeypatch.setattr(
            NotifyWeComBot, "notify_url", f"http://127.0.0.1:{sink.port}/wecom?key={{key}}"
        )
        outcome = await asyncio.to_thread(
            send, "wecombot://botkey", message.title, message.body, "chat"
        )
        assert outcome.ok, outcome.error
        (request,) = await sink.wait_for(1)
    text = request.payload["text"]["content"]
    assert request.payload["msgtype"] == "text"
    assert "####" not in text and "**" not in text and "](" not in text
    assert "发布权威信息:已到时限,尚未完成" in text
    assert text.rstrip().endswith(f"确认收到: {ack_url}")  # the link alone, at the end


def test_twilio_voice_and_sms_service_urls_are_understood() -> None:
    """Twilio calls cannot be placed from here (no internet); what can be checked is that the
    documented channel templates, filled in, are URLs apprise accepts."""
    import apprise

    for url in (
        "twilio://ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb@15551234567/8613800000001?method=call",
        "twilio://ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb@15551234567/8613800000001",
        "json://sms-gateway.example.gov.cn/send?:to=%2B8613800000001",
        "form://voice-gateway.example.gov.cn/call?:to=%2B8613800000001",
    ):
        assert apprise.Apprise().add(url), url


async def test_a_slow_gateway_is_waited_for_never_given_up_on_while_it_still_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """apprise 2.x stops waiting for a service after its ``service_timeout`` and reports a
    failure while the send goes on in its thread: retried, the message would go out twice.
    With apprise's default shortened to 0.3 s, a plain Apprise gives up on a gateway that
    answers after 0.8 s; responder's send waits for the answer.  (The sending process gives up
    only after alerts.send_timeout, and then never retries on the same channel.)"""
    import apprise

    from responder.engine.apprise_call import send
    from tests.sinks import HttpSink

    monkeypatch.setattr(apprise.AppriseAsset, "_service_timeout", 0.3)
    async with HttpSink(delay=0.8) as sink:
        plain = apprise.Apprise()
        plain.add(sink.json_url("plain"))
        result = await asyncio.to_thread(plain.notify, body="x", title="")
        assert result.status is apprise.AppriseResultStatus.TIMEOUT  # … while it still runs

        outcome = await asyncio.to_thread(send, sink.json_url("ours"), "", "x", "sms")
        assert outcome.ok, outcome.error
        assert outcome.seconds >= 0.8


async def test_a_step_whose_audience_reaches_nobody_tells_the_administrators(
    db: Database, cfg: Config, clock: FakeClock
) -> None:
    """A lead unit with no head or spokesperson in the config (added without its people, or
    since emptied): its T-2h reminder, addressed only to them, used to fire and tell no one."""
    cfg.units.append(Unit(id="transport", name="区交通运输局", name_en="Transport Bureau"))
    ops = Ops(db, cfg, clock)
    scheduler = Scheduler(db, cfg, clock, SECRET, Metrics(), lambda: None)

    async def declare(lead: str) -> str:
        return await ops.declare(
            DeclareIncident(
                title="隧道坍塌", category="accident", level="II", occurred_at=clock.now(),
                lead_unit=lead,
            ),
            "test",
        )  # fmt: skip

    orphan, staffed = await declare("transport"), await declare("emergency")
    await scheduler.fire_due()  # "declared": the duty desk is told for both
    clock.advance(timedelta(hours=3))  # T-2h: the lead unit's head and spokesperson only
    await scheduler.fire_due()

    def told(iid: str) -> Any:
        return db.fetchall(
            "SELECT person_id, kind, context FROM notifications WHERE incident_id = ?"
            " AND created_at = (SELECT MAX(created_at) FROM notifications)"
            " AND incident_id = ? ORDER BY id",
            (iid, iid),
        )

    [admin] = await told(orphan)
    assert (admin["person_id"], admin["kind"]) == ("admin-liu", "watchdog")
    action = json.loads(admin["context"])
    assert (
        action["action"] == "提醒“T-2h”无人可发:牵头单位区交通运输局无对应人员,请电话通知并补全配置"
    )
    assert "reached nobody" in action["action_en"] and "Transport Bureau" in action["action_en"]
    # By SMS it follows the incident's title: within the two segments (134 characters).
    sms = render("sms", "zh", {"step_kind": "watchdog", "title": "隧道坍塌" * 6,
                               "action": action["action"], "ack_url": "http://127.0.0.1:8080/ack/"
                               + "x" * 32})  # fmt: skip
    assert len(sms.body) <= 134, (len(sms.body), sms.body)
    assert {r["person_id"] for r in await told(staffed)} == {"wang-fang", "li-qiang"}
