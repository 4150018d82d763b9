"""Incidents, releases and press conferences, notifications, accountability records and the
plan over the API (declare, list, get, level, close, timeline).

Time is the FakeClock's (2026-11-26 09:00 +08:00), over a real socket."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest

from responder import auth
from responder.errors import BadInput
from tests.api_helpers import (
    INCIDENTS,
    assert_prometheus_text,
    obligation,
    ok,
    refused,
)
from tests.web_helpers import ZONE, Web, rfc3339

pytest_plugins = ["tests.web_fixtures"]


async def test_declare_answers_201_with_deadlines_in_the_local_zone(web: Web) -> None:
    body = web.declaration(occurred_at="2026-11-26T08:00:00+08:00", co_units=["health"])
    resp = await web.post(INCIDENTS, body, "duty_officer")
    incident = await ok(resp, 201)
    assert re.fullmatch(r"INC-20261126-\d{4}", incident["id"])
    assert resp.headers["Location"] == f"{INCIDENTS}/{incident['id']}"
    assert incident["status"] == "active"
    assert incident["level"] == "II" and incident["level_name"] == "重大"
    assert incident["occurred_at"] == "2026-11-26T08:00:00+08:00"
    assert incident["declared_at"] == "2026-11-26T09:00:00+08:00"
    assert incident["co_units"] == ["health"]
    assert incident["declared_by"] == "user:duty-officer-1"
    assert incident["rule_set"] == "gbf-2016-80"
    release = obligation(incident, "authoritative_release")
    conference = obligation(incident, "press_conference")
    assert release["deadline"] == "2026-11-26T13:00:00+08:00"  # 5 h
    assert release["within_s"] == 5 * 3600
    assert conference["deadline"] == "2026-11-27T08:00:00+08:00"  # 24 h
    assert {release["status"], conference["status"]} == {"open"}
    for o in incident["obligations"]:
        assert o["deadline"].endswith(ZONE) and o["clock_start_at"].endswith(ZONE)
    # A time given in another offset means the same instant; answers come back in +08:00.
    other = await ok(
        await web.post(INCIDENTS, web.declaration(occurred_at="2026-11-26T00:30:00Z")), 201
    )
    assert other["occurred_at"] == "2026-11-26T08:30:00+08:00"
    assert obligation(other, "authoritative_release")["deadline"] == "2026-11-26T13:30:00+08:00"
    # A level III incident has no 5 h / 24 h duties.
    minor = await web.declare(level="III")
    assert minor["obligations"] == []


async def test_list_filters_and_pages(web: Web) -> None:
    a = await web.declare(title="A", level="II", lead_unit="emergency")
    b = await web.declare(title="B", level="IV", lead_unit="health", co_units=["emergency"])
    c = await web.declare(title="C", level="I", lead_unit="health", drill=True)
    d = await web.declare(title="D", level="II", lead_unit="publicity")
    await ok(await web.post(f"{INCIDENTS}/{d['id']}/close", {"reason": "误报"}))

    async def ids(who: str = "viewer", **params: Any) -> list[str]:
        data = await ok(await web.get(INCIDENTS, who, params=params))
        return [i["id"] for i in data["items"]]

    newest_first = [d["id"], c["id"], b["id"], a["id"]]
    assert await ids() == newest_first
    assert await ids(status="active") == [c["id"], b["id"], a["id"]]
    assert await ids(status="closed") == [d["id"]]
    assert await ids(level="II") == [d["id"], a["id"]]
    assert await ids(unit="emergency") == [b["id"], a["id"]]  # lead or co-unit
    assert await ids(unit="nobody") == []
    assert await ids(drill="true") == [c["id"]]
    assert await ids(drill="false") == [d["id"], b["id"], a["id"]]
    assert await ids(status="active", level="I", drill="true") == [c["id"]]
    page = await ok(await web.get(INCIDENTS, params={"limit": "2", "offset": "1"}))
    assert page["total"] == 4 and page["limit"] == 2 and page["offset"] == 1
    assert [i["id"] for i in page["items"]] == newest_first[1:3]
    assert await ids(limit="2", offset="10") == []
    for bad in ({"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"offset": "-1"},
                {"status": "open"}, {"level": "V"}, {"drill": "maybe"}):  # fmt: skip
        await refused(await web.get(INCIDENTS, params=bad), 422, "invalid")
    # A misspelt filter is refused, naming it, instead of quietly listing every incident.
    data = await refused(await web.get(INCIDENTS, params={"stauts": "active"}), 422, "invalid")
    assert [d["field"] for d in data["detail"]] == ["stauts"]
    plan = {"level": "II", "occurred_at": "2026-11-26T08:00:00+08:00", "leval": "I"}
    await refused(await web.get("/api/v1/plan", params=plan), 422, "invalid")
    await refused(await web.get("/api/v1/accountability", params={"unti": "x"}), 422, "invalid")


async def test_a_token_with_an_end_works_until_then_and_then_says_it_expired(web: Web) -> None:
    """A token made for an integration's trial month stops by itself; the integration's
    on-call engineer reads why in the answer, instead of guessing at a bad token."""
    end = web.clock.now() + timedelta(days=30)
    await auth.add_user(web.db, "platform", "duty_officer", None, web.clock.now(), "test")
    token, _ = await auth.create_token(web.db, "platform", "trial", web.clock.now(), "test", end)
    bearer = {"Authorization": f"Bearer {token}"}
    web.clock.advance(timedelta(days=30) - timedelta(seconds=1))
    await ok(await web.get(INCIDENTS, "none", headers=bearer))
    await ok(await web.post(INCIDENTS, web.declaration(), "none", headers=bearer), 201)
    web.clock.advance(timedelta(seconds=1))  # the end itself: no longer valid
    before = await web.db.fetchone("SELECT COUNT(*) FROM incidents")
    data = await refused(
        await web.post(INCIDENTS, web.declaration(), "none", headers=bearer), 401, "token_expired"
    )
    assert "令牌已于" in data["message"] and "过期" in data["message"]
    assert "responder token create" in data["message_en"]
    assert data["detail"] == {"expired_at": end.astimezone(web.cfg.tz).isoformat()}
    assert await web.db.fetchone("SELECT COUNT(*) FROM incidents") == before
    await refused(await web.get(INCIDENTS, "expired_token"), 401, "token_expired")
    # Metrics tell an alert rule how long until the next active token ends: none left here.
    assert (
        "responder_token_next_expiry_seconds"
        not in await (await web.get("/metrics", "viewer")).text()
    )
    await auth.create_token(
        web.db, "platform", "next", web.clock.now(), "test", web.clock.now() + timedelta(days=6)
    )
    text = unlabelled(await (await web.get("/metrics", "viewer")).text())
    assert "responder_token_next_expiry_seconds 518400\n" in text
    # A token cannot be made already expired.
    with pytest.raises(BadInput) as e:
        await auth.create_token(web.db, "platform", "x", web.clock.now(), "test", web.clock.now())
    assert e.value.code == "token_expiry_not_in_future"


async def test_a_disabled_user_is_refused_at_once_and_a_tokens_use_is_noted(web: Web) -> None:
    async def last_used() -> str | None:
        row = await web.db.fetchone(
            "SELECT t.last_used_at FROM tokens t JOIN users u ON u.id = t.user_id"
            " WHERE u.username = 'viewer-1'"
        )
        assert row is not None
        return row[0]

    assert await last_used() is None
    await ok(await web.get(INCIDENTS, "viewer"))
    first = await last_used()
    assert first is not None
    web.clock.advance(timedelta(minutes=30))
    await ok(await web.get(INCIDENTS, "viewer"))
    assert await last_used() == first  # noted to the hour: not a write per request
    web.clock.advance(timedelta(minutes=31))
    await ok(await web.get(INCIDENTS, "viewer"))
    assert (await last_used() or "") > first
    await auth.set_disabled(web.db, "viewer-1", True, web.clock.now(), "test")
    await refused(await web.get(INCIDENTS, "viewer"), 401, "unauthorized")
    await auth.set_disabled(web.db, "viewer-1", False, web.clock.now(), "test")
    await ok(await web.get(INCIDENTS, "viewer"))


@pytest.mark.sqlite_only  # a SQLite trigger makes the note fail
async def test_a_read_is_answered_when_noting_the_tokens_use_fails(web: Web) -> None:
    """Noting a token's last use is bookkeeping: a database that refuses the write (here a
    trigger; in life a full disk) must not also refuse the duty officer's reads."""

    def refuse_notes(tx: Any) -> None:
        tx.execute(
            "CREATE TRIGGER no_notes BEFORE UPDATE OF last_used_at ON tokens"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )

    await web.db.transact(refuse_notes)
    await ok(await web.get(INCIDENTS, "viewer"))
    assert await web.count("tokens", "last_used_at IS NOT NULL") == 0


async def test_get_one_incident(web: Web) -> None:
    incident = await web.declare()
    got = await ok(await web.get(f"{INCIDENTS}/{incident['id']}", "reviewer"))
    assert got == incident
    await refused(await web.get(f"{INCIDENTS}/INC-20991231-0001"), 404, "incident_not_found")


async def test_level_change_adds_and_waives(web: Web, dump_tables: Any) -> None:
    incident = await web.declare(level="IV")
    iid = incident["id"]
    assert incident["obligations"] == []
    web.clock.advance(timedelta(minutes=10))
    raised = await ok(
        await web.post(f"{INCIDENTS}/{iid}/level", {"level": "II", "reason": "死亡人数上升"})
    )
    assert raised["from"] == "IV" and raised["to"] == "II"
    assert sorted(raised["added"]) == ["authoritative_release", "press_conference"]
    assert raised["waived"] == [] and raised["breached"] == []
    release = obligation(raised["incident"], "authoritative_release")
    # Raised into II: the clock counts from the raise (09:10), not from the occurrence.
    assert release["clock_start"] == "level_changed_at"
    assert release["deadline"] == "2026-11-26T14:10:00+08:00"
    assert raised["incident"]["level"] == "II"

    lowered = await ok(
        await web.post(f"{INCIDENTS}/{iid}/level", {"level": "III", "reason": "核实后降级"})
    )
    assert sorted(lowered["waived"]) == ["authoritative_release", "press_conference"]
    assert {o["status"] for o in lowered["incident"]["obligations"]} == {"waived"}

    before = await dump_tables(web.db)
    await refused(
        await web.post(f"{INCIDENTS}/{iid}/level", {"level": "III", "reason": "x"}),
        422,
        "same_level",
    )
    await refused(
        await web.post(f"{INCIDENTS}/{iid}/level", {"level": "II", "reason": ""}), 422, "invalid"
    )
    await refused(
        await web.post(f"{INCIDENTS}/{iid}/level", {"level": "V", "reason": "x"}), 422, "invalid"
    )
    assert await dump_tables(web.db) == before


async def test_level_change_after_a_deadline_reports_the_breach(web: Web) -> None:
    incident = await web.declare(occurred_at=web.at(hours=-4))
    web.clock.advance(timedelta(hours=2))  # the 5 h release deadline has passed unrecorded
    result = await ok(
        await web.post(f"{INCIDENTS}/{incident['id']}/level", {"level": "III", "reason": "降级"})
    )
    assert result["breached"] == ["authoritative_release"]
    assert obligation(result["incident"], "authoritative_release")["status"] == "breached"
    assert obligation(result["incident"], "press_conference")["status"] == "waived"


async def test_close_then_every_change_is_409(web: Web, dump_tables: Any) -> None:
    incident = await web.declare()
    iid = incident["id"]
    closed = await ok(await web.post(f"{INCIDENTS}/{iid}/close", {"reason": "处置完毕"}))
    assert closed["incident"]["status"] == "closed"
    assert closed["incident"]["close_reason"] == "处置完毕"
    assert closed["incident"]["closed_at"] == "2026-11-26T09:00:00+08:00"
    assert sorted(closed["waived"]) == ["authoritative_release", "press_conference"]
    assert closed["breached"] == []

    before = await dump_tables(web.db)
    for path, body in (
        ("close", {"reason": "again"}),
        ("level", {"level": "I", "reason": "x"}),
        ("releases", {"published_at": web.at(minutes=-1)}),
        ("follow-ups", {"published_at": web.at(minutes=-1)}),
        ("press-conferences", {"scheduled_at": web.at(hours=1)}),
        ("press-conferences/1/reschedule", {"scheduled_at": web.at(hours=1), "reason": "x"}),
        ("press-conferences/held", {"held_at": web.at(minutes=-1), "principal_leader_spoke": True}),
    ):
        await refused(await web.post(f"{INCIDENTS}/{iid}/{path}", body), 409, "incident_closed")
    assert await dump_tables(web.db) == before
    # Reading still works.
    assert (await ok(await web.get(f"{INCIDENTS}/{iid}")))["status"] == "closed"


async def test_timeline_is_the_audit_trail_in_order(web: Web) -> None:
    incident = await web.declare()
    iid = incident["id"]
    web.clock.advance(timedelta(minutes=30))
    await ok(
        await web.post(f"{INCIDENTS}/{iid}/releases", {"published_at": web.at(minutes=-5)}), 201
    )
    await ok(await web.post(f"{INCIDENTS}/{iid}/close", {"reason": "完毕"}))
    timeline = await ok(await web.get(f"{INCIDENTS}/{iid}/timeline", "viewer"))
    assert [e["action"] for e in timeline] == [
        "incident.declared",
        "release.authoritative",
        "incident.closed",
    ]
    assert [e["seq"] for e in timeline] == sorted(e["seq"] for e in timeline)
    assert timeline[0]["at"] == "2026-11-26T09:00:00+08:00"
    assert timeline[1]["at"] == "2026-11-26T09:30:00+08:00"
    assert timeline[0]["actor"] == "user:admin-1"
    assert timeline[0]["data"]["title"] == incident["title"]
    await refused(await web.get(f"{INCIDENTS}/INC-X/timeline"), 404)


async def test_releases_checklist_and_follow_ups(web: Web) -> None:
    incident = await web.declare(occurred_at=web.at(hours=-2))
    iid = incident["id"]
    release = {
        "published_at": web.at(minutes=-10),
        "channels": ["政府网站", "微博"],
        "url": "https://example.gov.cn/a/1",
        "text": "权威发布:……",
        "checklist": {"time_place": True, "what_happened": True, "measures": True},
    }
    result = await ok(await web.post(f"{INCIDENTS}/{iid}/releases", release, "duty_officer"), 201)
    assert result["checklist_missing"] == [
        "casualties_losses",
        "public_advice",
        "next_release",
        "contact",
    ]
    assert result["met"] == [
        {
            "obligation": "authoritative_release",
            "seq": 1,
            "status": "met",
            "recorded_late": False,
            "overrun_s": 0,
        }
    ]
    assert result["recorded_late"] is False
    met = obligation(result["incident"], "authoritative_release")
    assert met["status"] == "met" and met["met_at"] == "2026-11-26T08:50:00+08:00"
    follow = obligation(result["incident"], "follow_up_release", 1)
    assert follow["status"] == "open" and follow["deadline"] == "2026-11-27T08:50:00+08:00"

    await refused(await web.post(f"{INCIDENTS}/{iid}/releases", release), 409, "already_released")
    await refused(
        await web.post(f"{INCIDENTS}/{iid}/releases", {"published_at": web.at(hours=1)}),
        422,
        "time_in_future",
    )
    await refused(
        await web.post(f"{INCIDENTS}/{iid}/follow-ups", {"published_at": web.at(hours=-3)}),
        422,
        "before_occurrence",
    )
    web.clock.advance(timedelta(hours=3))
    second = await ok(
        await web.post(f"{INCIDENTS}/{iid}/follow-ups", {"published_at": web.at(minutes=-1)}), 201
    )
    assert [m["obligation"] for m in second["met"]] == ["follow_up_release"]
    assert second["checklist_missing"] == list(
        ("time_place", "what_happened", "casualties_losses", "measures", "public_advice",
         "next_release", "contact")
    )  # fmt: skip
    assert obligation(second["incident"], "follow_up_release", 2)["status"] == "open"
    # The same request again (a client that lost the answer): not a second follow-up, which
    # would meet the next 24 h duty at once with nothing new published.
    retry = {"published_at": second["incident"]["obligations"][-1]["clock_start_at"]}
    data = await refused(
        await web.post(f"{INCIDENTS}/{iid}/follow-ups", retry), 409, "release_already_recorded"
    )
    assert str(second["id"]) in data["message"]
    after = await ok(await web.get(f"{INCIDENTS}/{iid}"))
    assert obligation(after, "follow_up_release", 2)["status"] == "open"
    assert not [o for o in after["obligations"] if o["seq"] == 3]
    assert await web.count("releases") == 2
    # Dated before the last release: it would meet a duty whose clock started after it.
    earlier = {"published_at": web.at(minutes=-2)}
    data = await refused(
        await web.post(f"{INCIDENTS}/{iid}/follow-ups", earlier), 409, "release_out_of_order"
    )
    assert data["message_en"].startswith("a follow-up must be later than the last release")
    assert await web.count("releases") == 2


async def test_press_conference_schedule_reschedule_held(web: Web) -> None:
    incident = await web.declare(occurred_at=web.at(hours=-2))
    iid = incident["id"]
    base = f"{INCIDENTS}/{iid}/press-conferences"
    scheduled = await ok(
        await web.post(base, {"scheduled_at": web.at(hours=3), "venue": "区政府新闻发布厅"}), 201
    )
    pc = scheduled["id"]
    assert scheduled["after_deadline"] is False
    await refused(await web.post(base, {"scheduled_at": web.at(hours=4)}), 409, "already_scheduled")
    late = await ok(
        await web.post(
            f"{base}/{pc}/reschedule", {"scheduled_at": web.at(hours=30), "reason": "领导出差"}
        )
    )
    assert late["id"] == pc and late["after_deadline"] is True  # past the 24 h deadline
    back = await ok(
        await web.post(
            f"{base}/{pc}/reschedule", {"scheduled_at": web.at(hours=5), "reason": "提前"}
        )
    )
    assert back["after_deadline"] is False
    await refused(
        await web.post(f"{base}/999/reschedule", {"scheduled_at": web.at(hours=5), "reason": "x"}),
        404,
        "press_conference_not_found",
    )
    web.clock.advance(timedelta(hours=6))
    held = await ok(
        await web.post(
            f"{base}/held",
            {
                "press_conference_id": pc,
                "held_at": web.at(minutes=-30),
                "spokesperson": "李强",
                "principal_leader_spoke": True,
            },
        )
    )
    assert held["id"] == pc
    assert [m["obligation"] for m in held["met"]] == ["press_conference"]
    assert obligation(held["incident"], "press_conference")["status"] == "met"
    await refused(
        await web.post(
            f"{base}/held",
            {
                "press_conference_id": pc,
                "held_at": web.at(minutes=-1),
                "principal_leader_spoke": False,
            },
        ),
        409,
        "already_held",
    )
    await refused(
        await web.post(f"{base}/{pc}/reschedule", {"scheduled_at": web.at(hours=1), "reason": "x"}),
        409,
        "not_scheduled",
    )
    # A conference held without being scheduled first.
    other = await web.declare()
    unscheduled = await ok(
        await web.post(
            f"{INCIDENTS}/{other['id']}/press-conferences/held",
            {"held_at": web.at(minutes=-1), "principal_leader_spoke": False},
        )
    )
    assert isinstance(unscheduled["id"], int)
    # The same request again (a client retrying after a lost answer) records nothing more.
    data = await refused(
        await web.post(
            f"{INCIDENTS}/{other['id']}/press-conferences/held",
            {"held_at": web.at(minutes=-1), "principal_leader_spoke": False},
        ),
        409,
        "already_held",
    )
    assert str(unscheduled["id"]) in data["message"]
    assert await web.count("press_conferences") == 2


@pytest.mark.parametrize("run_engine", [True])
async def test_notifications_are_sent_and_contacts_masked(web: Web) -> None:
    incident = await web.declare()
    iid = incident["id"]
    await web.wait_for(
        "SELECT COUNT(*) FROM notifications WHERE incident_id = ? AND status = 'sent'", (iid,)
    )
    # Let the rest of the first wave go out too (real sends to the dev inbox).
    await web.wait_for(
        "SELECT COUNT(*) = 0 FROM notifications WHERE incident_id = ? AND status IN"
        " ('queued', 'sending')",
        (iid,),
    )
    resp = await web.get(f"{INCIDENTS}/{iid}/notifications", "viewer")
    text = await resp.text()
    notes = json.loads(text)
    assert resp.status == 200 and notes
    people = {n["person"] for n in notes}
    assert {"wang-fang", "li-qiang", "chen-jing"} <= people
    for person in web.cfg.people:
        for contact in (person.phone, person.email):
            if contact:
                assert contact not in text, f"{contact} unmasked in the API answer"
    wang = next(n for n in notes if n["person"] == "wang-fang")
    assert wang["phone"] == "+86138****0001"
    assert wang["email"] == "wa****@example.gov.cn"
    assert wang["person_name"] == "王芳"
    assert wang["status"] == "sent" and wang["sent_channel"] == "sms"
    assert wang["attempts"][0]["outcome"] == "sent"
    assert wang["attempts"][0]["error_message"] is None and wang["last_error_message"] is None
    assert wang["sent_at"].endswith(ZONE)
    await refused(await web.get(f"{INCIDENTS}/INC-NOPE/notifications"), 404)

    # /metrics after some sends: database gauges and the send-duration histogram.
    metrics = await web.get("/metrics", "viewer")
    assert metrics.status == 200
    body = unlabelled(await metrics.text())
    assert 'responder_incidents_active{level="II",drill="false"} 1' in body
    assert 'responder_obligations{status="open",drill="false"} 2' in body
    assert re.search(r'responder_notifications\{channel="sms",status="sent"\} \d+', body)
    assert "# TYPE responder_send_duration_seconds histogram" in body
    assert re.search(
        r'responder_send_duration_seconds_bucket\{channel="sms",le="\+Inf"\} \d+', body
    )
    assert re.search(r"responder_send_duration_seconds_count\{channel=\"sms\"\} [1-9]", body)
    assert_prometheus_text(body)
    for person in web.cfg.people:
        assert person.phone not in body


async def test_accountability_records(web: Web) -> None:
    late = await web.declare(occurred_at=web.at(hours=-6), lead_unit="health")
    await web.declare()  # in time: no record
    records = await ok(await web.get("/api/v1/accountability", "reviewer"))
    assert len(records) == 1
    record = records[0]
    assert record["incident_id"] == late["id"]
    assert record["unit"] == "health" and record["responsible_person"] == "zhao-min"
    assert record["deadline"] == "2026-11-26T08:00:00+08:00"
    assert record["status"] == "open" and record["met_at"] is None

    async def count(**params: str) -> int:
        return len(await ok(await web.get("/api/v1/accountability", params=params)))

    assert await count(incident_id=late["id"]) == 1
    assert await count(unit="health") == 1
    assert await count(unit="emergency") == 0
    assert await count(status="open") == 1
    assert await count(status="decided") == 0
    await refused(await web.get("/api/v1/accountability", params={"status": "x"}), 422)

    one = await ok(await web.get(f"/api/v1/accountability/{record['id']}", "viewer"))
    assert one["id"] == record["id"] and isinstance(one["notifications"], list)
    await refused(await web.get("/api/v1/accountability/999"), 404, "record_not_found")

    # Recording the release late settles the record with the overrun.
    await ok(
        await web.post(f"{INCIDENTS}/{late['id']}/releases", {"published_at": web.at(minutes=-1)}),
        201,
    )
    settled = await ok(await web.get(f"/api/v1/accountability/{record['id']}"))
    assert settled["met_at"] == "2026-11-26T08:59:00+08:00"
    assert settled["overrun_s"] == 59 * 60


async def test_plan(web: Web) -> None:
    plan = await ok(
        await web.get(
            "/api/v1/plan",
            "viewer",
            params={"level": "I", "occurred_at": "2026-11-26T08:00:00+08:00"},
        )
    )
    assert plan["level"] == "I" and plan["timezone"] == "Asia/Shanghai"
    assert plan["declared_at"] == "2026-11-26T09:00:00+08:00"
    web.clock.advance(0.25)  # "now" in a preview reads as the next whole second
    later = await ok(
        await web.get(
            "/api/v1/plan", params={"level": "I", "occurred_at": "2026-11-26T03:00:00+08:00"}
        )
    )
    assert later["declared_at"] == "2026-11-26T09:00:01+08:00"
    assert all("." not in s["due_at"] for s in later["steps"])
    assert plan["rule_set"]["id"] == "gbf-2016-80"
    deadlines = {o["kind"]: o["deadline"] for o in plan["obligations"]}
    assert deadlines == {
        "authoritative_release": "2026-11-26T13:00:00+08:00",
        "press_conference": "2026-11-27T08:00:00+08:00",
    }
    assert plan["steps"] and all(s["due_at"].endswith(ZONE) for s in plan["steps"])
    # 2016 Jiangsu practice: 6 h.
    old = await ok(
        await web.get(
            "/api/v1/plan",
            params={
                "level": "II",
                "occurred_at": "2016-06-01T08:00:00+08:00",
                "declared_at": "2016-06-01T09:00:00+08:00",
            },
        )
    )
    assert {o["kind"]: o["within_s"] for o in old["obligations"]}[
        "authoritative_release"
    ] == 6 * 3600
    level_iv = await ok(
        await web.get("/api/v1/plan", params={"level": "IV", "occurred_at": web.at(hours=-1)})
    )
    assert level_iv["obligations"] == [] and level_iv["steps"] == []
    for bad, code in (
        ({"level": "II"}, "invalid"),
        ({"occurred_at": web.at(hours=-1)}, "invalid"),
        ({"level": "II", "occurred_at": "2026-11-26T08:00:00"}, "naive_time"),
        ({"level": "II", "occurred_at": "yesterday"}, "bad_time"),
        ({"level": "II", "occurred_at": web.at(hours=1)}, "time_in_future"),
        ({"level": "II", "occurred_at": web.at(minutes=2, seconds=2)}, "time_in_future"),
    ):
        await refused(await web.get("/api/v1/plan", params=bad), 422, code)
    # A client clock a minute fast: taken as now, as a declaration takes it.
    fast = await ok(
        await web.get("/api/v1/plan", params={"level": "II", "occurred_at": web.at(minutes=1)})
    )
    declared = await web.declare(occurred_at=web.at(minutes=1))
    assert declared["occurred_at"] == rfc3339(web.clock.now().replace(microsecond=0))
    assert fast["occurred_at"] == declared["occurred_at"]  # the same second, not one later
    assert fast["occurred_at"] <= fast["declared_at"]
    # curl "…?occurred_at=2026-11-26T08:00:00+08:00": the query reads "+" as a space.  The
    # answer says so, instead of asking for the RFC 3339 time that was in fact sent.
    lost = await refused(
        await web.get("/api/v1/plan?level=II&occurred_at=2026-11-26T08:00:00+08:00"),
        422,
        "bad_time",
    )
    assert "%2B" in lost["message"] and "%2B" in lost["message_en"], lost


def unlabelled(metrics: str) -> str:
    """/metrics without the replica label PostgreSQL's replicas add to every sample."""
    return re.sub(r'replica="[^"]*",?', "", metrics).replace("{}", "")
