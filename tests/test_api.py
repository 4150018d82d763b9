"""The JSON API under /api/v1/, /healthz and /metrics, over a real socket.

Time is the FakeClock's (2026-11-26 09:00 +08:00).  Bad input gets a clear 4xx with
``{error, detail, message, message_en}`` and changes nothing; no client input yields a 500.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from responder import auth
from responder.engine import outbox
from responder.errors import API_CODES, NOT_API_CODES, BadInput, ResponderError
from responder.idempotency import Once
from responder.models import DeclareIncident
from responder.web.keys import ENGINE
from tests.web_helpers import SECRET, ZONE, Web, assert_error_body, rfc3339

pytest_plugins = ["tests.web_fixtures"]

INCIDENTS = "/api/v1/incidents"


async def ok(resp: Any, status: int = 200) -> Any:
    data = await resp.json()
    assert resp.status == status, data
    return data


async def refused(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    data = await resp.json()
    assert resp.status == status, data
    assert_error_body(data)
    if code is not None:
        assert data["error"] == code, data
    return data


def obligation(incident: dict[str, Any], kind: str, seq: int = 1) -> dict[str, Any]:
    matches = [o for o in incident["obligations"] if o["kind"] == kind and o["seq"] == seq]
    assert len(matches) == 1, incident["obligations"]
    return matches[0]


# -- incidents -------------------------------------------------------------------------------


async def test_a_retried_declaration_with_its_idempotency_key_declares_once(web: Web) -> None:
    """An emergency platform that lost the answer sends the same request again: the leaders
    must not get a second incident's alerts, nor the unit a second accountability record."""
    key = {"Idempotency-Key": "city-platform-20261126-0042"}
    first = await web.post(INCIDENTS, web.declaration(), "duty_officer", headers=key)
    again = await web.post(INCIDENTS, web.declaration(), "duty_officer", headers=key)
    assert first.status == again.status == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    one, two = await first.json(), await again.json()
    assert one["id"] == two["id"] and again.headers["Location"] == f"{INCIDENTS}/{one['id']}"
    assert await web.count("incidents") == 1
    assert await web.count("audit_log", "action = 'incident.declared'") == 1
    # Sent at the same moment (a client that timed out quickly): still one incident.
    racing = {"Idempotency-Key": "racing"}
    answers = await asyncio.gather(
        *(web.post(INCIDENTS, web.declaration(), "duty_officer", headers=racing) for _ in range(5))
    )
    assert {(await a.json())["id"] for a in answers} == {(await answers[0].json())["id"]}
    assert await web.count("incidents") == 2


async def test_an_idempotency_key_belongs_to_one_declaration_and_one_user(web: Web) -> None:
    key = {"Idempotency-Key": "k-1"}
    first = await ok(await web.post(INCIDENTS, web.declaration(), "duty_officer", headers=key), 201)
    data = await refused(
        await web.post(INCIDENTS, web.declaration(level="I"), "duty_officer", headers=key),
        422,
        "idempotency_key_reused",
    )
    assert first["id"] in data["message"] and first["id"] in data["message_en"]
    assert await web.count("incidents") == 1
    other = await ok(await web.post(INCIDENTS, web.declaration(), "admin", headers=key), 201)
    assert other["id"] != first["id"]  # another user's key of the same name is another key


async def test_every_change_sent_again_with_its_key_is_made_once_and_answered_again(
    web: Web,
) -> None:
    """The platform retries each change after a lost answer: the second request changes
    nothing (no second audit entry, no second row) and gets the first answer again."""
    incident = await web.declare(level="III", occurred_at=web.at(hours=-2))
    iid = incident["id"]
    base = f"{INCIDENTS}/{iid}"
    steps: list[tuple[str, dict[str, Any], int]] = [
        ("level", {"level": "II", "reason": "伤亡人数上升"}, 200),
        ("releases", {"published_at": web.at(minutes=-30)}, 201),
        ("follow-ups", {"published_at": web.at(minutes=-10)}, 201),
        ("press-conferences", {"scheduled_at": web.at(hours=3)}, 201),
        (
            "press-conferences/{pc}/reschedule",
            {"scheduled_at": web.at(hours=4), "reason": "改期"},
            200,
        ),
        ("press-conferences/held", {"held_at": web.at(minutes=-1)}, 200),
        ("close", {"reason": "处置完毕"}, 200),
    ]
    pc = None
    for n, (path, payload, status) in enumerate(steps):
        url = f"{base}/{path.format(pc=pc)}"
        if path == "press-conferences/held":
            payload = {**payload, "press_conference_id": pc, "principal_leader_spoke": True}
        key = {"Idempotency-Key": f"step-{n}"}
        first = await web.post(url, payload, "duty_officer", headers=key)
        one = await ok(first, status)
        entries = await web.count("audit_log")
        again = await web.post(url, payload, "duty_officer", headers=key)
        two = await ok(again, status)
        assert "Idempotent-Replayed" not in first.headers, path
        assert again.headers["Idempotent-Replayed"] == "true", path
        one.pop("incident"), two.pop("incident")
        assert one == two, path
        assert await web.count("audit_log") == entries, f"{path} was recorded twice"
        if path == "press-conferences":
            pc = one["id"]
    assert await web.count("level_changes") == 1
    assert await web.count("releases") == 2
    assert await web.count("press_conferences") == 1


async def test_a_key_is_for_one_request_and_a_refused_request_keeps_no_key(web: Web) -> None:
    a = (await web.declare(occurred_at=web.at(hours=-2)))["id"]
    b = (await web.declare(occurred_at=web.at(hours=-2)))["id"]
    key = {"Idempotency-Key": "level-1"}
    raise_a = {"level": "I", "reason": "升级"}
    await ok(await web.post(f"{INCIDENTS}/{a}/level", raise_a, "duty_officer", headers=key))
    entries = await web.count("audit_log")
    for url, payload in (
        (f"{INCIDENTS}/{b}/level", raise_a),  # the same body, another incident
        (f"{INCIDENTS}/{a}/level", {"level": "I", "reason": "另一个理由"}),  # another body
        (f"{INCIDENTS}/{a}/close", {"reason": "升级"}),  # another operation
        (INCIDENTS, web.declaration()),  # a declaration
    ):
        data = await refused(
            await web.post(url, payload, "duty_officer", headers=key), 422, "idempotency_key_reused"
        )
        assert a in data["message"] and a in data["message_en"]
    assert await web.count("audit_log") == entries
    # Refused for what it asked (the level it already has): the key is not used up.
    key2 = {"Idempotency-Key": "level-2"}
    same = {"level": "I", "reason": "重复"}
    await refused(await web.post(f"{INCIDENTS}/{a}/level", same, "duty_officer", headers=key2), 422)
    lower = {"level": "II", "reason": "核实后下调"}
    await ok(await web.post(f"{INCIDENTS}/{a}/level", lower, "duty_officer", headers=key2))


async def test_retries_racing_each_other_change_the_level_once(web: Web) -> None:
    iid = (await web.declare(occurred_at=web.at(hours=-2)))["id"]
    key = {"Idempotency-Key": "racing-level"}
    body = {"level": "I", "reason": "伤亡人数上升"}
    answers = await asyncio.gather(
        *(web.post(f"{INCIDENTS}/{iid}/level", body, "duty_officer", headers=key) for _ in range(5))
    )
    assert [a.status for a in answers] == [200] * 5
    assert sum("Idempotent-Replayed" in a.headers for a in answers) == 4
    assert await web.count("level_changes") == 1


async def test_a_key_recorded_before_every_change_took_keys_still_answers_its_declaration(
    web: Web,
) -> None:
    """Keys stored by the first release (declarations only, no stored answer) still replay."""
    first = await web.declare()
    body = web.declaration()
    as_validated = DeclareIncident.model_validate(body).model_dump(mode="json")
    digest = Once.of("user:duty-officer-1", "old-key", "POST /incidents", as_validated)

    def old_row(tx: Any) -> None:
        tx.execute(
            "INSERT INTO idempotency_keys (actor, key, request_hash, incident_id, created_at)"
            " VALUES (?,?,?,?,?)",
            (
                digest.actor,
                digest.key,
                digest.request_hash,
                first["id"],
                "2026-11-26T00:00:00.000000Z",
            ),
        )

    await web.db.transact(old_row)
    again = await web.post(INCIDENTS, body, "duty_officer", headers={"Idempotency-Key": "old-key"})
    assert (await ok(again, 201))["id"] == first["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await web.count("incidents") == 1


@pytest.mark.parametrize("value", ["", "x" * 256, "has space", "café", "tab\there"])
async def test_a_malformed_idempotency_key_is_refused_and_nothing_declared(
    web: Web, value: str
) -> None:
    resp = await web.post(INCIDENTS, web.declaration(), headers={"Idempotency-Key": value})
    await refused(resp, 400, "bad_idempotency_key")
    assert await web.count("incidents") == 0


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
    text = await (await web.get("/metrics", "viewer")).text()
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


# -- releases and press conferences -------------------------------------------------------


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


# -- notifications, accountability, plan -------------------------------------------------------


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
    body = await metrics.text()
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


# -- bad input -------------------------------------------------------------------------------


def _error_classes() -> dict[str, int]:
    import responder.web.api  # (BadRequest)
    import responder.web.identity  # noqa: F401  (Unauthorized, Forbidden)

    found, todo = {}, [ResponderError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls.status
        todo += cls.__subclasses__()
    return found


def test_every_error_code_is_documented_with_its_status() -> None:
    """The document's list of error codes (``API_CODES``) is the source's: every code raised
    with one of our errors, or answered by the error middleware, is listed with the status it
    really gets (or is known to be the command line's or the pages'), and nothing is listed
    that nothing answers."""
    from responder.web import api
    from responder.web.errors import _HTTP_CODES
    from responder.web.routing import openapi

    classes = _error_classes()
    raised: dict[str, set[int]] = {}
    root = Path(__file__).resolve().parents[1] / "responder"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            code, status = node.args[0], classes.get(name)
            if name == "json_error":  # json_error(status, code, …)
                code, status = node.args[1], getattr(node.args[0], "value", None)
            if status is not None and isinstance(code, ast.Constant):
                raised.setdefault(code.value, set()).add(status)
    for status, (code, _, _) in _HTTP_CODES.items():
        raised.setdefault(code, set()).add(status)

    assert set(raised) - set(API_CODES) - NOT_API_CODES == set()  # raised, not documented
    assert set(API_CODES) - set(raised) == set()  # documented, never answered
    assert NOT_API_CODES.isdisjoint(API_CODES)
    wrong = {c: (API_CODES[c][0], s) for c, s in raised.items() if c in API_CODES
             and s != {API_CODES[c][0]}}  # fmt: skip
    assert wrong == {}
    listed = openapi(api.ROUTES)["components"]["schemas"]["Error"]["properties"]["error"]
    for code, (status, _) in API_CODES.items():
        assert f"- `{code}` ({status}): " in listed["description"]


async def test_malformed_json_is_400_and_changes_nothing(web: Web, dump_tables: Any) -> None:
    before = await dump_tables(web.db)
    for raw in (b"{", b"{'title': 1}", b"\xff\xfe\x00", b"", b"[" * 100_000, b"NaN-ish"):
        resp = await web.call(
            "POST", INCIDENTS, data=raw, headers={"Content-Type": "application/json"}
        )
        await refused(resp, 400, "bad_json")
    for valid_json_wrong_shape in (b"[]", b"null", b'"x"', b"42"):
        resp = await web.call(
            "POST",
            INCIDENTS,
            data=valid_json_wrong_shape,
            headers={"Content-Type": "application/json"},
        )
        await refused(resp, 422, "invalid")
    # A field given twice: which was meant cannot be known (json.loads would keep the last).
    resp = await web.call(
        "POST",
        INCIDENTS,
        data=json.dumps(web.declaration())[:-1].encode() + b', "level": "IV"}',
        headers={"Content-Type": "application/json"},
    )
    twice = await refused(resp, 400, "bad_json")
    assert twice["message"] == "请求内容中字段“level”出现了不止一次"
    # A declaration in GBK, as older systems send it: told to send UTF-8, not "not JSON".
    gbk = json.dumps(web.declaration(), ensure_ascii=False).encode("gbk")
    resp = await web.call(
        "POST", INCIDENTS, data=gbk, headers={"Content-Type": "application/json; charset=GBK"}
    )
    told = await refused(resp, 400, "bad_json")
    assert "UTF-8" in told["message"] and "GBK" in told["message_en"]
    assert await dump_tables(web.db) == before


async def test_a_query_parameter_given_twice_is_refused(web: Web) -> None:
    data = await refused(
        await web.get("/api/v1/incidents?level=I&level=II&status=active"), 422,
        "duplicate_parameter",
    )  # fmt: skip
    assert data["message_en"] == "query parameters given more than once: level"


async def test_wrong_content_type_is_415(web: Web) -> None:
    body = json.dumps(web.declaration()).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        resp = await web.call("POST", INCIDENTS, data=body, headers={"Content-Type": ctype})
        data = await refused(resp, 415, "unsupported_media_type")
        assert "JSON" in data["message"]
    # Parameters of the JSON media type are fine.
    resp = await web.call(
        "POST", INCIDENTS, data=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    await ok(resp, 201)


async def test_body_over_256_kib_is_413(web: Web, dump_tables: Any) -> None:
    before = await dump_tables(web.db)
    big = web.declaration(summary="x" * (300 * 1024))
    data = await refused(await web.post(INCIDENTS, big), 413, "too_large")
    assert data["message_en"]
    assert await dump_tables(web.db) == before


async def test_unknown_field_is_422_and_nothing_written(web: Web, dump_tables: Any) -> None:
    before = await dump_tables(web.db)
    data = await refused(
        await web.post(INCIDENTS, web.declaration(severity="high")), 422, "invalid"
    )
    assert data["detail"] == [
        {
            "field": "severity",
            "problem": "Extra inputs are not permitted",
            "problem_zh": "不认识此字段(请检查拼写)",
            "type": "extra_forbidden",
        }
    ]
    assert data["message"] == "提交的内容有误——severity:不认识此字段(请检查拼写)"
    # The input is not echoed back, neither in the detail nor in the messages.
    secret_value = "s3cr3t-value-not-to-echo"
    data = await refused(await web.post(INCIDENTS, web.declaration(x=secret_value)), 422)
    assert secret_value not in json.dumps(data)
    data = await refused(await web.post(INCIDENTS, web.declaration(level=secret_value)), 422)
    assert secret_value not in json.dumps(data)
    assert await dump_tables(web.db) == before


async def test_a_refused_body_names_each_field_and_says_why(web: Web) -> None:
    """The message a duty officer sees names the fields and the problem in Chinese first."""
    data = await refused(
        await web.post(
            INCIDENTS,
            web.declaration(title="", level="2", category="fire", drill="maybe", co_units="x"),
        ),
        422,
        "invalid",
    )
    zh = {d["field"]: d["problem_zh"] for d in data["detail"]}
    assert zh == {
        "title": "不能为空",
        "category": "取值须为 'natural_disaster'、'accident'、'public_health' 或 'social_security'",
        "level": "取值须为 'I'、'II'、'III' 或 'IV'",
        "drill": "须为 true 或 false",
        "co_units": "须为列表(JSON 数组)",
    }
    assert data["message"].startswith("提交的内容有误——title:不能为空;category:")
    assert "level: Input should be 'I', 'II', 'III' or 'IV'" in data["message_en"]
    six = {"title": 1, "category": 2, "level": 3, "occurred_at": 4, "lead_unit": 5, "x": 6}
    too_many = await refused(await web.post(INCIDENTS, six), 422, "invalid")
    assert len(too_many["detail"]) == 6 and too_many["message"].endswith(";另有 1 处")
    assert too_many["message_en"].endswith("; and 1 more")
    long = await refused(await web.post(INCIDENTS, web.declaration(title="长" * 201)), 422)
    assert long["detail"][0]["problem_zh"] == "太长(最多 200 个字符)"
    naive = await refused(
        await web.post(INCIDENTS, web.declaration(occurred_at="2026-11-26T08:00:00")), 422
    )
    assert naive["message"] == "提交的内容有误——occurred_at:时间缺少时区偏移量,例如 +08:00"
    assert (
        naive["message_en"]
        == "some fields are not valid — occurred_at: the time has no offset, e.g. +08:00"
    )


async def test_naive_time_is_422_with_a_clear_message(web: Web, dump_tables: Any) -> None:
    before = await dump_tables(web.db)
    data = await refused(
        await web.post(INCIDENTS, web.declaration(occurred_at="2026-11-26T08:00:00")),
        422,
        "invalid",
    )
    text = json.dumps(data, ensure_ascii=False)
    assert "时区" in text and "offset" in text
    assert data["detail"][0]["field"] == "occurred_at"
    assert await dump_tables(web.db) == before


async def test_business_checks_are_422(web: Web, dump_tables: Any) -> None:
    before = await dump_tables(web.db)
    data = await refused(
        await web.post(INCIDENTS, web.declaration(occurred_at=web.at(minutes=5))),
        422,
        "time_in_future",
    )
    assert "occurred_at" in data["message"]
    data = await refused(
        await web.post(INCIDENTS, web.declaration(lead_unit="nowhere")), 422, "unknown_unit"
    )
    assert "nowhere" in data["message_en"] and "emergency" in data["message_en"]
    # The units a duty officer may mean, by name as well as id; English without Chinese commas.
    assert "emergency(区应急管理局)" in data["message"], data["message"]
    assert "、" not in data["message_en"] and ", " in data["message_en"]
    await refused(
        await web.post(INCIDENTS, web.declaration(co_units=["emergency", "ghost"])),
        422,
        "unknown_unit",
    )
    await refused(
        await web.post(
            INCIDENTS, web.declaration(occurred_at=web.at(hours=-1), learned_at=web.at(hours=-2))
        ),
        422,
        "learned_before_occurred",
    )
    for field, value in (("category", "alien"), ("level", "V"), ("title", ""), ("drill", "x")):
        await refused(await web.post(INCIDENTS, web.declaration(**{field: value})), 422, "invalid")
    assert await dump_tables(web.db) == before


EXTREME_TIMES = [
    "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
    "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
    "0001-01-01T00:00:00Z",
    "1899-12-31T23:59:59Z",
]


async def test_times_out_of_range_are_422_not_500(web: Web, dump_tables: Any) -> None:
    incident = await web.declare()
    iid = incident["id"]
    before = await dump_tables(web.db)
    for t in EXTREME_TIMES:
        for path, body in (
            (INCIDENTS, web.declaration(occurred_at=t)),
            (INCIDENTS, web.declaration(learned_at=t)),
            (f"{INCIDENTS}/{iid}/releases", {"published_at": t}),
            (f"{INCIDENTS}/{iid}/press-conferences", {"scheduled_at": t}),
            (
                f"{INCIDENTS}/{iid}/press-conferences/held",
                {"held_at": t, "principal_leader_spoke": True},
            ),
        ):
            data = await refused(await web.post(path, body), 422, "invalid")
            assert "out of range" in json.dumps(data), (path, t, data)
        for params in (
            {"level": "II", "occurred_at": t},
            {"level": "II", "occurred_at": web.at(hours=-1), "declared_at": t},
        ):
            await refused(await web.get("/api/v1/plan", params=params), 422, "time_out_of_range")
    # Far-future conference dates inside the range are fine.
    await ok(
        await web.post(
            f"{INCIDENTS}/{iid}/press-conferences", {"scheduled_at": "2999-12-31T00:00:00Z"}
        ),
        201,
    )
    for pc in (2**62, 2**63, 2**70):
        await refused(
            await web.post(
                f"{INCIDENTS}/{iid}/press-conferences/held",
                {
                    "press_conference_id": pc,
                    "held_at": web.at(minutes=-1),
                    "principal_leader_spoke": True,
                },
            ),
            422,
            "invalid",
        )
    after = await dump_tables(web.db)
    assert {k: v for k, v in after.items() if k not in ("press_conferences", "audit_log")} == {
        k: v for k, v in before.items() if k not in ("press_conferences", "audit_log")
    }
    # Everything still reads back.
    await ok(await web.get(INCIDENTS))


async def test_unknown_incident_is_404_everywhere(web: Web) -> None:
    missing = f"{INCIDENTS}/INC-20261126-9999"
    for path, body in (
        ("level", {"level": "I", "reason": "x"}),
        ("close", {"reason": "x"}),
        ("releases", {"published_at": web.at(minutes=-1)}),
        ("follow-ups", {"published_at": web.at(minutes=-1)}),
        ("press-conferences", {"scheduled_at": web.at(hours=1)}),
        ("press-conferences/1/reschedule", {"scheduled_at": web.at(hours=1), "reason": "x"}),
        ("press-conferences/held", {"held_at": web.at(minutes=-1), "principal_leader_spoke": True}),
    ):
        await refused(await web.post(f"{missing}/{path}", body), 404, "incident_not_found")
    for path in ("", "/timeline", "/notifications"):
        await refused(await web.get(missing + path), 404, "incident_not_found")


async def test_bad_path_ids_are_4xx_never_500(web: Web) -> None:
    incident = await web.declare()
    iid = incident["id"]
    gets = [
        f"{INCIDENTS}/{'I' * 65}",
        f"{INCIDENTS}/%00",
        f"{INCIDENTS}/%E2%80%AE%F0%9F%98%80",
        f"{INCIDENTS}/..%2F..%2Fetc%2Fpasswd",
        f"{INCIDENTS}/'%20OR%20'1'%3D'1",
        "/api/v1/accountability/abc",
        "/api/v1/accountability/0",
        "/api/v1/accountability/-1",
        "/api/v1/accountability/" + "9" * 30,
        "/api/v1/accountability/" + "9" * 5000,
        "/api/v1/accountability/1.5",
        "/api/v1/nothing-here",
    ]
    for path in gets:
        resp = await web.get(path)
        assert 400 <= resp.status < 500, (path, resp.status)
        assert_error_body(await resp.json())
    body = {"scheduled_at": web.at(hours=1), "reason": "x"}
    for pc in ("abc", "0", "-3", "9" * 30, "%00"):
        resp = await web.post(f"{INCIDENTS}/{iid}/press-conferences/{pc}/reschedule", body)
        assert 400 <= resp.status < 500, (pc, resp.status)
        assert_error_body(await resp.json())
    resp = await web.call("DELETE", f"{INCIDENTS}/{iid}")
    await refused(resp, 405, "method_not_allowed")


# -- headers, injection, health ------------------------------------------------------------


def assert_security_headers(headers: Any, what: str) -> None:
    csp = headers.get("Content-Security-Policy", "")
    assert csp, f"{what}: no CSP"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, what
    assert "frame-ancestors 'none'" in csp, what
    assert "script-src 'self'" in csp, what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Referrer-Policy") == "no-referrer", what
    assert headers.get("Server") == "responder", what  # not aiohttp's name and version


async def test_security_headers_on_every_answer(web: Web) -> None:
    incident = await web.declare()
    client = web.client
    answers = {
        "ok": await web.get(f"{INCIDENTS}/{incident['id']}"),
        "created": await web.post(INCIDENTS, web.declaration()),
        "401": await web.get(INCIDENTS, "none"),
        "403": await web.post(INCIDENTS, web.declaration(), "viewer"),
        "404 api": await web.get(f"{INCIDENTS}/nope"),
        "404 page": await client.get("/no/such/page"),
        "405": await web.call("PUT", INCIDENTS),
        "413": await web.post(INCIDENTS, web.declaration(summary="x" * 300_000)),
        "415": await web.call("POST", INCIDENTS, data=b"x", headers={"Content-Type": "text/plain"}),
        "422": await web.post(INCIDENTS, {}),
        "400": await web.call(
            "POST", INCIDENTS, data=b"{", headers={"Content-Type": "application/json"}
        ),
        "healthz": await client.get("/healthz"),
        "metrics": await client.get("/metrics"),
        "openapi": await client.get("/api/v1/openapi.json"),
        "login": await client.get("/login"),
        "redirect": await client.get("/", allow_redirects=False),
        "static": await client.get("/static/style.css"),
        "ack 404": await client.get("/ack/not-a-token"),
    }
    for what, resp in answers.items():
        assert_security_headers(resp.headers, what)
        assert "Strict-Transport-Security" not in resp.headers, what  # public_url is http here
    assert answers["redirect"].status == 303


async def test_hsts_when_the_public_url_is_https(web: Web) -> None:
    web.cfg.service.public_url = "https://responder.example.gov.cn"
    for resp in (
        await web.get(INCIDENTS),
        await web.client.get("/", allow_redirects=False),
        await web.client.get("/no/such/page"),
    ):
        assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"


# Control characters are refused instead (tests/test_hostile_requests.py): text goes into SMS.
# So are U+2028, U+2029 and the direction controls in one-line text (tests/test_hostile_edges.py);
# the mark LRM (U+200E) and zero-width characters are kept.
INJECTIONS = [
    "'; DROP TABLE incidents; --",
    "<script>alert(1)</script>",
    "{{7*7}}",
    "${jndi:ldap://x/a}",
    "Robert'); DELETE FROM audit_log WHERE ('1'='1",
    "\u200eevil\u200b\ufeff",
]


async def test_hostile_strings_are_stored_and_returned_verbatim(web: Web) -> None:
    long_title = "突" * 199 + "😀"
    long_summary = "发生" * 1000 + "𠀋" * 1000  # 3000 code points, some outside the BMP
    ids = []
    for text in INJECTIONS:
        incident = await web.declare(title=text, summary=text, location=text)
        assert incident["title"] == text
        assert incident["summary"] == text and incident["location"] == text
        ids.append(incident["id"])
        release = {
            "published_at": web.at(minutes=-1),
            "text": text,
            "url": f"https://example.gov.cn/{text}",  # a web address (javascript: is refused)
            "channels": [text],
        }
        await ok(await web.post(f"{INCIDENTS}/{incident['id']}/releases", release), 201)
        row = await web.db.fetchone(
            "SELECT i.title, i.summary, i.location, r.text, r.url FROM incidents i"
            " JOIN releases r ON r.incident_id = i.id WHERE i.id = ?",
            (incident["id"],),
        )
        assert row is not None and tuple(row) == (text,) * 4 + (f"https://example.gov.cn/{text}",)
        got = await ok(await web.get(f"{INCIDENTS}/{incident['id']}"))
        assert got["title"] == text and got["summary"] == text
        timeline = await ok(await web.get(f"{INCIDENTS}/{incident['id']}/timeline"))
        assert timeline[1]["data"]["text"] == text
        # Filters take hostile strings as plain values.
        listed = await ok(await web.get(INCIDENTS, params={"unit": text}))
        assert listed["items"] == []
    big = await web.declare(title=long_title, summary=long_summary, location="地" * 200)
    got = await ok(await web.get(f"{INCIDENTS}/{big['id']}"))
    assert got["title"] == long_title and got["summary"] == long_summary
    assert got["location"] == "地" * 200
    # Over the limits: refused, not truncated.
    await refused(await web.post(INCIDENTS, web.declaration(title="突" * 201)), 422)
    # Every table is still there, with every row.
    assert await web.count("incidents") == len(INJECTIONS) + 1
    assert await web.count("audit_log") > 0
    assert await web.count("releases") == len(INJECTIONS)


async def test_healthz_is_503_when_the_engine_is_not_running(web: Web) -> None:
    resp = await web.client.get("/healthz")
    data = await resp.json()
    assert resp.status == 503, data
    assert data["status"] == "unhealthy" and "engine not running" in data["problems"]
    assert "提醒引擎未在运行,提醒不会发出" in data["problems_zh"]


async def test_healthz_says_how_late_alerts_are(web: Web) -> None:
    """A declaration whose first alerts nobody fires (the engine is stopped here): ten minutes
    later /healthz says how late, in both languages, against alerts.max_lag (2 min)."""
    await web.declare()
    web.clock.advance(timedelta(minutes=10))
    resp = await web.client.get("/healthz")
    data = await resp.json()
    assert resp.status == 503
    assert "alerts are 600 s late (bound 120 s)" in data["problems"]
    assert "提醒已延迟 600 秒(上限 120 秒)" in data["problems_zh"]
    assert data["scheduler_lag_s"] == 600.0


@pytest.mark.parametrize("run_engine", [True])
async def test_healthz_is_200_with_the_engine_then_503_when_stopped(web: Web) -> None:
    resp = await web.client.get("/healthz")
    data = await resp.json()
    assert resp.status == 200, data
    # Ready, or still loading apprise's plugins just after the start.
    assert data["alerts"].pop("sending_process") in ("starting", "ready")
    assert data == {
        "status": "ok",
        "problems": [],
        "problems_zh": [],
        "degraded": [],
        "degraded_zh": [],
        "scheduler_lag_s": 0.0,
        "dispatcher_lag_s": 0.0,
        "alerts": {"failing": [], "recovered_at": None},
    }
    await web.app[ENGINE].stop()
    resp = await web.client.get("/healthz")
    assert resp.status == 503
    assert "engine not running" in (await resp.json())["problems"]


@pytest.mark.parametrize("run_engine", [True])
@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_healthz_is_503_when_the_database_file_is_deleted_or_replaced(
    web: Web, how: str
) -> None:
    """Deleted, or replaced (a backup copied over it), under the running service: the file it
    opened went on answering and taking writes that the next start never sees, and /healthz
    said 200 throughout."""
    assert (await web.client.get("/healthz")).status == 200
    _delete_or_replace(Path(web.cfg.service.database), how)
    if how == "deleted":
        en = "the database file is no longer at its path: changes made now are lost on restart"
        zh = "数据库文件已不在其路径上:此后的更改在重启后会丢失"
    else:
        en = (
            "the database file at its path is not the one this service opened: changes made"
            " now are lost on restart"
        )
        zh = "数据库路径上的文件已不是本服务打开的那个:此后的更改在重启后会丢失"
    resp = await web.client.get("/healthz")
    data = await resp.json()
    assert resp.status == 503, data
    assert (data["status"], data["problems"], data["problems_zh"]) == ("unhealthy", [en], [zh])


def _delete_or_replace(path: Path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    else:
        copy = path.with_name("restored.sqlite3")
        shutil.copyfile(path, copy)  # the same bytes, in another file
        copy.replace(path)


async def test_metrics_need_a_token_of_any_role(web: Web) -> None:
    """How many major emergencies are active may not be public before the authoritative
    release; and every scrape counts whole tables."""
    await web.declare()
    for who in ("none", "bad_token", "revoked_token"):
        data = await refused(await web.get("/metrics", who), 401, "unauthorized")
        assert "responder_incidents_active" not in json.dumps(data)
    for who in ("viewer", "reviewer", "duty_officer", "admin"):
        resp = await web.get("/metrics", who)
        assert resp.status == 200, who
        assert 'responder_incidents_active{level="II",drill="false"} 1' in await resp.text()
    health = await web.client.get("/healthz")  # probes need no token, and learn nothing more
    # (alerts: who is not being reached and on which channels, never an incident or a contact)
    assert set(await health.json()) == {
        "status", "problems", "problems_zh", "degraded", "degraded_zh", "scheduler_lag_s",
        "dispatcher_lag_s", "alerts",
    }  # fmt: skip


async def test_metrics_without_sends(web: Web) -> None:
    await web.declare()
    await web.declare(level="IV", drill=True)
    resp = await web.get("/metrics", "viewer")
    assert resp.status == 200 and resp.content_type == "text/plain"
    body = await resp.text()
    assert "# TYPE responder_incidents_active gauge\n" in body
    active = dict(re.findall(r"^responder_incidents_active\{(.*)\} (\d+)$", body, re.M))
    assert len(active) == 8  # every level, drill or not, zeros included
    assert active['level="II",drill="false"'] == "1"
    assert active['level="IV",drill="true"'] == "1"  # an exercise is told apart
    assert sum(map(int, active.values())) == 2
    assert "# TYPE responder_obligations gauge" in body
    assert "# TYPE responder_notifications gauge" in body


# One sample line of Prometheus text: a name, label values with only \\ \" and \n escaped in
# them, a value.
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{{{_LABEL}(?:,{_LABEL})*\}})? \S+")


def assert_prometheus_text(body: str) -> None:
    """Every sample line well formed, and every family opened by ``# HELP`` then ``# TYPE``:
    one bad line and Prometheus drops the whole scrape."""
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert i > 0 and lines[i - 1].startswith(f"# HELP {name} "), (name, lines[i - 1])
        elif not line.startswith("# HELP "):
            assert _SAMPLE.fullmatch(line), line


async def test_metrics_escape_a_channel_name_holding_a_quote(web: Web) -> None:
    """A channel named ch"at (a quoted TOML key) made the notifications line invalid, and
    Prometheus then rejects every metric of the scrape."""
    channel = 'ch"at\\x\ny'

    def queue_one(tx: sqlite3.Connection) -> int:
        return outbox.queue(
            tx, SECRET, incident_id=None, obligation_id=None, step_id=None, person_id="chen",
            channels=[channel], kind="watchdog", context={}, now=web.clock.now(),
        )  # fmt: skip

    await web.db.transact(queue_one)
    body = await (await web.get("/metrics", "viewer")).text()
    assert 'responder_notifications{channel="ch\\"at\\\\x\\ny",status="queued"} 1\n' in body
    assert "# HELP responder_notifications " in body
    assert_prometheus_text(body)


async def test_healthz_writes_chinese_as_it_is(web: Web) -> None:
    """As the API does: problems_zh read with curl, not as \\uXXXX escapes."""
    resp = await web.client.get("/healthz")
    text = await resp.text()
    assert '"problems_zh": ["提醒引擎未在运行,提醒不会发出"]' in text and "\\u" not in text


async def test_an_internal_error_answers_500_with_the_request_id_and_logs_it(
    web: Web, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault no client can cause (here: the list query made to fail) answers a plain 500
    whose reference is the request id, also on the log's lines: the administrator finds the
    traceback from what the integrator quotes.  The fault's own words stay in the log."""

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk said no: /var/lib/responder")

    monkeypatch.setattr("responder.queries.incidents", broken)
    caplog.set_level("INFO")
    resp = await web.get(INCIDENTS, "viewer", headers={"X-Request-Id": "city-trace-7"})
    data = await refused(resp, 500, "internal")
    assert resp.headers["X-Request-Id"] == "city-trace-7"
    assert "city-trace-7" in data["message"] and "city-trace-7" in data["message_en"]
    assert "disk said no" not in json.dumps(data)
    failed = [r for r in caplog.records if r.name == "responder.web"]
    assert failed and "city-trace-7" in failed[0].getMessage() and failed[0].exc_info
    line = [r for r in caplog.records if r.name == "responder.access"]
    assert [(r.levelname, r.fields["status"], r.fields["user"]) for r in line] == [  # type: ignore[attr-defined]
        ("ERROR", 500, "viewer-1")
    ]


async def test_a_path_cannot_forge_a_log_line(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    """The access line writes the path as sent (percent-encoded): a %0A in it must not start
    a new, forged line in a text log."""
    caplog.set_level("INFO")
    forged = "/api/v1/incidents%0A2026-11-27%2003:12:00%20INFO%20responder.ops:%20forged"
    resp = await web.client.get(URL(forged, encoded=True), headers=web.auth("viewer"))
    assert resp.status == 404
    [line] = [r.getMessage() for r in caplog.records if r.name == "responder.access"]
    assert "\n" not in line and "%0A2026" in line


async def test_a_token_put_in_the_address_is_not_logged(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that puts its token in the query string by mistake is refused (unknown
    parameter), and the token does not reach the log with the path."""
    caplog.set_level("INFO")
    token = web.tokens["viewer"]
    resp = await web.client.get(INCIDENTS, params={"access_token": token})
    assert resp.status == 401
    resp = await web.get(INCIDENTS, "viewer", params={"access_token": token})
    assert resp.status == 422
    # (The test server keeps aiohttp's own access log, which `responder serve` turns off.)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("responder")]
    assert len([x for x in lines if "access_token=rsp_…" in x]) == 2
    assert not any(token in x or token[4:20] in x for x in lines)


async def test_a_body_that_cannot_be_decoded_is_400_and_changes_nothing(web: Web) -> None:
    """A broken gzip body used to end in a 500 ("internal error") for what is the client's
    mistake.  (The API inflates it itself now: responder.web.bodies.)"""
    before = await web.count("incidents")
    resp = await web.call(
        "POST",
        "/api/v1/incidents",
        "duty_officer",
        data=b"this is not gzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    body = await resp.json()
    assert resp.status == 400, body
    assert_error_body(body)
    assert body["error"] == "bad_request"
    assert "无法读取" in body["message"] and "compression" in body["message_en"]
    assert await web.count("incidents") == before
    # A page form takes no compressed body at all: a readable page, not the 500 page.
    resp = await web.client.post(
        "/login",
        data=b"username=x&password=y",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Encoding": "deflate",
        },
    )
    assert resp.status == 415 and "不接受压缩" in await resp.text()


async def test_times_in_answers_are_documented_as_times(web: Web) -> None:
    """Every time in an answer was documented as plain text: a generated client read
    deadlines as strings.  Now format date-time, and each is RFC 3339 in the configured zone."""
    doc = await ok(await web.client.get("/api/v1/openapi.json"))
    schemas = doc["components"]["schemas"]
    for model, field in (
        ("Obligation", "deadline"),
        ("Incident", "occurred_at"),
        ("Notification", "sent_at"),
        ("AccountabilityRecord", "breached_at"),
    ):
        assert {"type": "string", "format": "date-time"} in schemas[model]["properties"][field][
            "anyOf"
        ], (model, field)  # fmt: skip
    incident = await web.declare()
    for o in incident["obligations"]:
        deadline = datetime.fromisoformat(o["deadline"])
        assert deadline.utcoffset() == timedelta(hours=8)


async def test_answer_headers_are_in_the_document(web: Web) -> None:
    """Location (a declaration) and Idempotent-Replayed (a retry's answer) were sent but not
    documented: an integrator's generated client did not know them."""
    doc = await ok(await web.client.get("/api/v1/openapi.json"))
    declared = doc["paths"]["/api/v1/incidents"]["post"]["responses"]["201"]["headers"]
    assert declared["Location"]["required"] is True
    assert declared["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}
    release = doc["paths"]["/api/v1/incidents/{incident_id}/releases"]["post"]["responses"]
    assert "Idempotent-Replayed" in release["201"]["headers"]
    assert "Location" not in release["201"]["headers"]
    resp = await web.post("/api/v1/incidents", web.declaration(), headers={"Idempotency-Key": "k1"})
    again = await web.post(
        "/api/v1/incidents", web.declaration(), headers={"Idempotency-Key": "k1"}
    )
    iid = (await resp.json())["id"]
    assert resp.headers["Location"] == again.headers["Location"] == f"/api/v1/incidents/{iid}"
    assert "Idempotent-Replayed" not in resp.headers
    assert again.headers["Idempotent-Replayed"] == "true"
