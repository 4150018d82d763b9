"""The role matrix: every route of the API × every kind of caller.

The routes come from ``responder.web.api.ROUTES`` itself, so a route added later is covered
without touching this file.  No credentials, a token nobody issued and a revoked token get 401;
a role not among the route's roles gets 403; every other caller reaches the handler.  A refused
write changes nothing at all.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel

from responder.accountability import Decide
from responder.models import (
    ChangeLevel,
    CloseIncident,
    DeclareIncident,
    PressConferenceHeld,
    RecordRelease,
    ReschedulePressConference,
    SchedulePressConference,
)
from responder.web.api import ROUTES, IncidentQuery, PlanQuery, QuarterlyQuery, RecordQuery
from responder.web.routing import Route
from tests.web_helpers import ROLES, UNAUTHENTICATED, Web, assert_error_body

pytest_plugins = ["tests.web_fixtures"]

CALLERS = (*UNAUTHENTICATED, *ROLES)


def sample_body(model: type[BaseModel], web: Web, ids: dict[str, Any]) -> dict[str, Any]:
    """A valid body for each request model; ``{}`` for a model this file does not know yet
    (the caller is still checked before the body is read, so the matrix holds)."""
    samples: dict[type[BaseModel], dict[str, Any]] = {
        DeclareIncident: web.declaration(),
        ChangeLevel: {"level": "I", "reason": "死亡人数上升"},
        CloseIncident: {"reason": "处置完毕"},
        RecordRelease: {"published_at": web.at(minutes=-1), "url": "https://example.gov.cn/1"},
        SchedulePressConference: {"scheduled_at": web.at(hours=2), "venue": "区政府新闻发布厅"},
        ReschedulePressConference: {"scheduled_at": web.at(hours=3), "reason": "领导行程调整"},
        PressConferenceHeld: {
            "press_conference_id": ids["press_conference_id"],
            "held_at": web.at(minutes=-1),
            "principal_leader_spoke": True,
        },
        Decide: {"action": "accept"},
    }
    return samples.get(model, {})


def sample_query(model: type[BaseModel] | None, web: Web) -> dict[str, str]:
    samples: dict[type[BaseModel], dict[str, str]] = {
        IncidentQuery: {"status": "active"},
        RecordQuery: {},
        PlanQuery: {"level": "II", "occurred_at": web.at(hours=-1)},
        QuarterlyQuery: {"year": "2026", "quarter": "4"},
    }
    return samples.get(model, {}) if model is not None else {}


def fill(path: str, ids: dict[str, Any]) -> str:
    return "/api/v1" + re.sub(r"\{(\w+)\}", lambda m: str(ids.get(m.group(1), 1)), path)


async def world(web: Web) -> dict[str, Any]:
    """An incident declared six hours after it occurred (so its 5 h release is breached and an
    accountability record exists) with a scheduled press conference; and another incident."""
    incident = await web.declare(occurred_at=web.at(hours=-6))
    iid = incident["id"]
    resp = await web.post(
        f"/api/v1/incidents/{iid}/press-conferences", {"scheduled_at": web.at(hours=1)}
    )
    assert resp.status == 201, await resp.text()
    pc = (await resp.json())["id"]
    row = await web.db.fetchone("SELECT id FROM accountability_records")
    assert row is not None
    other = await web.declare(title="另一起事件")  # without a press conference scheduled
    released = await web.declare(title="已发布的事件")  # its authoritative release is recorded
    resp = await web.post(
        f"/api/v1/incidents/{released['id']}/releases", {"published_at": web.at(minutes=-2)}
    )
    assert resp.status == 201, await resp.text()
    return {
        "incident_id": iid,
        "press_conference_id": pc,
        "record_id": row[0],
        "other_incident_id": other["id"],
        "released_incident_id": released["id"],
    }


# Requests that need an incident in another state than the shared one.
OTHER_INCIDENT = {SchedulePressConference}


def _route_id(route: Route) -> str:
    return f"{route.method} {route.path}"


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", ROUTES, ids=_route_id)
async def test_route_admits_exactly_its_roles(
    web: Web, route: Route, caller: str, dump_tables: Any
) -> None:
    ids = await world(web)
    if route.body in OTHER_INCIDENT:
        ids = {**ids, "incident_id": ids["other_incident_id"]}
    if route.path.endswith("/follow-ups"):  # a follow-up comes after the authoritative release
        ids = {**ids, "incident_id": ids["released_incident_id"]}
    path = fill(route.path, ids)
    params = sample_query(route.query, web)
    body = sample_body(route.body, web, ids) if route.body is not None else None
    before = await dump_tables(web.db)

    resp = await web.call(route.method, path, caller, json_body=body, params=params)
    data = await resp.json()

    if caller in UNAUTHENTICATED:
        assert resp.status == 401, (caller, data)
        assert_error_body(data)
    elif caller not in route.roles:
        assert resp.status == 403, (caller, data)
        assert_error_body(data)
        assert caller in data["message_en"]
    else:
        assert resp.status not in (401, 403), (caller, data)
        known = route.body is None or sample_body(route.body, web, ids)
        if known:  # a request this file knows how to make succeeds
            assert resp.status == route.status, (caller, data)
        return
    # Refused: nothing changed, not even an audit entry.
    assert await dump_tables(web.db) == before


def test_every_route_is_in_the_openapi_document() -> None:
    from responder.web.routing import openapi

    doc = openapi(ROUTES)
    for route in ROUTES:
        op = doc["paths"]["/api/v1" + route.path][route.method.lower()]
        assert op["security"] == [{"bearer": []}]
        assert {"401", "403"} <= set(op["responses"])
