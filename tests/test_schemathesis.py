"""Property-based tests of the API against its own OpenAPI document (schemathesis).

A real server on 127.0.0.1 (aiohttp is neither ASGI nor WSGI): the app runs in a thread with
its own event loop; schemathesis loads ``/api/v1/openapi.json`` from it and sends generated
requests, valid and invalid, to every operation with an admin token.  Each answer must not be
a server error, must use a status code the document lists, and must match the documented
schema.  A request valid by the document must be taken (schemathesis' positive-data check):
refused only for what the document describes but no schema can express — a rule that depends
on the incident's state or on the clock.  Bounded and derandomized: the same examples on every
run.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from responder.accountability import Decide
from responder.clock import FakeClock
from responder.config import Config
from responder.models import (
    CloseIncident,
    DeclareIncident,
    RecordRelease,
    SchedulePressConference,
)
from responder.web.api import ROUTES
from responder.web.app import create_app
from responder.web.keys import DB, OPS
from responder.web.routing import Route
from responder.web.server import HANDLER
from tests.sinks import free_port
from tests.web_helpers import SECRET, make_tokens, rfc3339

T = TypeVar("T")
EXAMPLES = 30  # per operation and mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,  # X-Request-Id on every answer, as documented
]
# The refusals a request valid by the document may still get: rules that depend on the
# incident's state or on the clock, each described in the document where it applies.  A
# refusal for anything else (a malformed time, an unknown unit, a character the service does
# not take) means the document does not say what the service enforces.
STATE_AND_CLOCK_RULES = {
    "time_in_future",
    "learned_before_occurred",
    "before_occurrence",
    "scheduled_in_past",
    "same_level",
    "idempotency_key_reused",
}


def valid_requests_are_taken(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """schemathesis' positive_data_acceptance (a valid request is not answered 400, 413, 415 or
    422), but for a refusal under one of the rules above."""
    if response.status_code == 422:
        try:
            code = response.json().get("error")
        except ValueError:
            code = None
        if code in STATE_AND_CLOCK_RULES:
            return None
    return positive_data_acceptance(ctx, response, case)  # type: ignore[no-any-return]


class LiveServer:
    """The app on a real socket, served from a thread with its own event loop."""

    def __init__(self, app: web.Application, port: int = 0) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(app, **HANDLER)  # as `responder serve` runs it
        self.port = port

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        self.run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        self.run(site.start())
        self.port = self.runner.addresses[0][1]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class World:
    """What the live server holds: tokens and the ids of the seeded records."""

    server: LiveServer
    tokens: dict[str, str]
    incidents: list[str]
    press_conference: int
    now: datetime


async def seed(app: web.Application, clock: FakeClock) -> tuple[dict[str, str], list[str], int]:
    """Tokens; incidents of several levels, one breached (an accountability record), one with a
    release and a scheduled press conference, one closed; and their first messages, sent."""
    db = app[DB]
    tokens, _ = await make_tokens(db, clock.now())
    ops = app[OPS]
    now = clock.now()
    ids = []
    for level, hours in (("II", 6), ("I", 1), ("IV", 2), ("II", 3)):
        ids.append(
            await ops.declare(
                DeclareIncident(
                    title=f"种子事件 {level}",
                    category="accident",
                    level=level,
                    occurred_at=now - timedelta(hours=hours),
                    lead_unit="emergency",
                    co_units=["health"],
                ),
                "test",
            )
        )
    # Released a minute after it occurred: the plausible follow-ups (1 and 30 minutes ago)
    # come after it, as a follow-up must.
    await ops.record_release(
        ids[1], RecordRelease(published_at=now - timedelta(minutes=59)), "test"
    )
    pc = await ops.schedule_press_conference(
        ids[1], SchedulePressConference(scheduled_at=now + timedelta(hours=2)), "test"
    )
    await ops.close(ids[3], CloseIncident(reason="误报"), "test")
    # Accountability records: #1 (ids[0]) stays open for decisions; two more, decided, for
    # the interview (约谈) and the correction report (限期整改).
    for _ in range(2):
        await ops.declare(
            DeclareIncident(
                title="种子事件 超时", category="accident", level="II",
                occurred_at=now - timedelta(hours=6), lead_unit="health",
            ),
            "test",
        )  # fmt: skip
    await ops.decide(2, Decide(action="change", measure="interview", reason="种子"), "test")
    await ops.decide(
        3,
        Decide(action="change", measure="correction", reason="种子", correction_required="整改"),
        "test",
    )
    # The engine sends the first wave to the app's own development inbox: real notifications
    # (with attempts) for the notification and accountability answers.
    async with asyncio.timeout(20):
        while True:
            row = await db.fetchone(
                "SELECT COUNT(*), SUM(status IN ('queued', 'sending')) FROM notifications"
            )
            assert row is not None
            if row[0] and not row[1]:
                break
            await asyncio.sleep(0.01)
    return tokens, ids, pc["id"]


@pytest.fixture
def live(cfg: Config, clock: FakeClock) -> Iterator[World]:
    port = free_port()
    cfg.channels = {
        name: url.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        for name, url in cfg.channels.items()
    }
    cfg.service.dev_inbox = True
    app = create_app(cfg, clock=clock, secret=SECRET, run_engine=True)
    with LiveServer(app, port) as server:
        tokens, ids, pc = server.run(seed(app, clock))
        yield World(server, tokens, ids, pc, clock.now())


# Body and query fields that the handlers check against the database and the clock; random
# values almost never pass those checks, so half the positive examples get plausible ones.
def _plausible(world: World, draw: int) -> dict[str, Any]:
    minutes = [60, -1, -30, 600, -90][draw % 5]  # the simplest draw (0) is valid for all
    return {
        "occurred_at": rfc3339(world.now - timedelta(hours=2)),
        "learned_at": rfc3339(world.now - timedelta(hours=1)),
        "published_at": rfc3339(world.now - timedelta(minutes=abs(minutes))),
        "held_at": rfc3339(world.now - timedelta(minutes=abs(minutes))),
        "scheduled_at": rfc3339(world.now + timedelta(minutes=minutes)),
        "declared_at": rfc3339(world.now),
        "lead_unit": ["emergency", "health", "publicity"][draw % 3],
        "co_units": [["gov-office"], [], ["health", "publicity"]][draw % 3],
        "press_conference_id": [world.press_conference, None][draw % 2],
        "received_at": rfc3339(world.now),  # when the seeded correction was asked
        "correction_due_at": rfc3339(world.now + timedelta(days=30)),
        "year": 2026,
        "corrects": None,
    }


_keys = itertools.count()


def steered(operation: Any, world: World) -> Any:
    def steer(drawn: tuple[schemathesis.Case, int, str]) -> schemathesis.Case:
        case, draw, incident = drawn
        values = _plausible(world, draw)
        if case.path_parameters and "incident_id" in case.path_parameters:
            case.path_parameters["incident_id"] = incident
        if case.path_parameters and "record_id" in case.path_parameters:
            # The open record for decisions; the interview's and the correction's otherwise.
            path = case.operation.path
            case.path_parameters["record_id"] = (
                2 if path.endswith("/interview") else 3 if path.endswith("report") else 1
            )
        if case.path_parameters and "press_conference_id" in case.path_parameters:
            case.path_parameters["press_conference_id"] = world.press_conference
            case.path_parameters["incident_id"] = world.incidents[1]  # the conference's
        for part in (case.body, case.query):
            if isinstance(part, dict):
                for key in [k for k in part if k in values]:
                    part[key] = values[key]
        if case.headers and "Idempotency-Key" in case.headers:
            # Drawn keys repeat ("0", "!"): a key reused for another request is refused (422),
            # so the plausible examples carry a key of their own.
            case.headers["Idempotency-Key"] = f"key-{next(_keys)}"
        return case

    return st.tuples(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        st.integers(0, 29),
        # The released incident twice as often: follow-ups and conferences need its release.
        st.sampled_from([*world.incidents, world.incidents[1]]),
    ).map(steer)


def _route_id(route: Route) -> str:
    return f"{route.method} {route.path}"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("route", ROUTES, ids=_route_id)
def test_operation_conforms_to_the_openapi_document(
    live: World, route: Route, mode: GenerationMode
) -> None:
    """One operation of the served document, with valid (positive) or invalid (negative)
    requests.  (Schemathesis' own pytest integration is not used: its lazy loader does not run
    under pytest 9.)"""
    server = live.server
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json", timeout=10)
    operation = schema["/api/v1" + route.path][route.method]
    headers = {"Authorization": f"Bearer {live.tokens['admin']}"}
    strategy = operation.as_strategy(generation_mode=mode)
    if mode == GenerationMode.POSITIVE:
        # Two parts plausible to one part drawn freely: enough valid requests succeed.
        plausible = steered(operation, live)
        strategy = st.one_of(strategy, plausible, plausible)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        checks = CHECKS + [valid_requests_are_taken] * (mode == GenerationMode.POSITIVE)
        response = case.call_and_validate(
            base_url=server.url, headers=headers, checks=checks, timeout=10
        )
        STATUSES.append(response.status_code)

    STATUSES: list[int] = []
    check()
    if mode == GenerationMode.POSITIVE:
        # Valid requests reach the handlers, and some succeed: the success answers are checked.
        assert route.status in STATUSES, sorted(set(STATUSES))


def test_the_served_document_is_openapi_3_1(live: World) -> None:
    resp = requests.get(f"{live.server.url}/api/v1/openapi.json", timeout=10)
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert len([op for path in doc["paths"].values() for op in path]) == len(ROUTES)
