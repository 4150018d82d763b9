"""Idempotency keys: a change sent again with its key is made once, and answered again.

Time is the FakeClock's (2026-11-26 09:00 +08:00), over a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from responder.idempotency import Once
from responder.models import DeclareIncident
from tests.api_helpers import (
    INCIDENTS,
    ok,
    refused,
)
from tests.web_helpers import Web

pytest_plugins = ["tests.web_fixtures"]


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
