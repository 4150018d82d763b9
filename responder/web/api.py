"""The JSON API under ``/api/v1/``.  Handlers are thin: check the caller, parse the body with
the route's model, call the one service layer (``ops``), shape the answer with the route's
response model.  The route table at the bottom is also the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from responder import queries
from responder.accountability import CorrectionReport, Decide, RecordInterview
from responder.errors import BadInput, ResponderError
from responder.idempotency import Once
from responder.models import (
    TIME_PATTERN,
    ChangeLevel,
    CloseIncident,
    DeclareIncident,
    Level,
    PressConferenceHeld,
    RecordRelease,
    ReschedulePressConference,
    SchedulePressConference,
)
from responder.ops import Ops
from responder.reports import records, render
from responder.timeutil import at_most_now, next_whole_second, parse_time
from responder.views import preview
from responder.web import schemas
from responder.web.bodies import read_body
from responder.web.identity import actor, require
from responder.web.keys import CFG, CLOCK, DB, OPS, request_key
from responder.web.routing import OPERATE, READ, REVIEW, Route, openapi

ROUTE = request_key("route", Route)


def _dumps(o: Any) -> str:
    return json.dumps(o, ensure_ascii=False)


def answer(request: web.Request, data: Any, status: int | None = None) -> web.Response:
    route: Route = request[ROUTE]
    if route.response is not None:
        try:
            if route.many:
                data = [
                    route.response.model_validate(d).model_dump(mode="json", by_alias=True)
                    for d in data
                ]
            else:
                data = route.response.model_validate(data).model_dump(mode="json", by_alias=True)
        except ValidationError as e:
            # Our answer does not match our own document: a server bug (500, logged), never a
            # 422 that would blame the client for a change that has already been made.
            raise RuntimeError(
                f"{route.method} {route.path}: answer does not match {route.response.__name__}: {e}"
            ) from None
    return web.json_response(data, status=status or route.status, dumps=_dumps)


class BadRequest(ResponderError):
    """The body cannot be read at all (not JSON): 400, as the OpenAPI document says."""

    status = 400


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different.  {"level": "II", "level": "I"} would
    otherwise quietly mean the last one; which was meant cannot be known."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key[:64])
        out[key] = value
    return out


async def body(request: web.Request) -> Any:
    route: Route = request[ROUTE]
    assert route.body is not None
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType()
    raw = await read_body(request)  # inflated here, after authentication; bounded → 413
    try:
        data = json.loads(raw, object_pairs_hook=_once_each)
    except _Duplicate as e:
        raise BadRequest(
            "bad_json",
            f"请求内容中字段“{e.key}”出现了不止一次",
            f"the body gives the field '{e.key}' more than once",
        ) from None
    except UnicodeDecodeError:  # often GBK from an older system; JSON between systems is UTF-8
        raise BadRequest(
            "bad_json",
            "请求内容不是 UTF-8 编码(可能是 GBK 等),请以 UTF-8 编码发送 JSON",
            "the body is not UTF-8 (GBK or another encoding?); send the JSON in UTF-8",
        ) from None
    except RecursionError:  # valid JSON perhaps, but [[[[… deeper than any request of ours
        raise BadRequest(
            "bad_json", "请求内容的嵌套层数过多", "the body's JSON nests too deeply"
        ) from None
    except ValueError:  # not JSON (UnicodeDecodeError is caught above)
        raise BadRequest(
            "bad_json", "请求内容不是有效的 JSON", "the body is not valid JSON"
        ) from None
    return route.body.model_validate(data)


def query(request: web.Request) -> Any:
    route: Route = request[ROUTE]
    assert route.query is not None
    twice = sorted({k for k in request.query if len(request.query.getall(k)) > 1})
    if twice:  # ?level=I&level=II: which one was meant?
        raise BadInput(
            "duplicate_parameter",
            f"查询参数出现了不止一次:{'、'.join(twice)}",
            f"query parameters given more than once: {', '.join(twice)}",
        )
    return route.query.model_validate(dict(request.query))


def incident_id(request: web.Request) -> str:
    value = request.match_info["incident_id"]
    if len(value) > 64:
        raise BadInput("bad_id", "事件编号格式不正确", "malformed incident id")
    return value


def int_param(request: web.Request, name: str) -> int:
    try:
        value = int(request.match_info[name])
    except ValueError:
        raise BadInput("bad_id", f"{name} 必须是数字", f"{name} must be a number") from None
    if not 0 < value < 2**62:
        raise BadInput("bad_id", f"{name} 超出范围", f"{name} is out of range")
    return value


# -- query models ---------------------------------------------------------------------------


class _Query(BaseModel):
    # A misspelt filter (?stauts=active) must not quietly answer every incident.
    model_config = ConfigDict(extra="forbid")


class IncidentQuery(_Query):
    status: Literal["active", "closed"] | None = None
    level: Level | None = None
    unit: str | None = Field(None, max_length=64)
    drill: bool | None = None
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=10_000_000)


class PlanQuery(_Query):
    level: Level
    occurred_at: str = Field(
        max_length=64,
        description="RFC 3339 with an offset; in the URL write its + as %2B"
        " (2026-11-26T08:00:00%2B08:00) or use Z. Not after declared_at (422"
        " `time_in_future`).",
        json_schema_extra={"format": "date-time", "pattern": TIME_PATTERN},
    )
    declared_at: str | None = Field(
        None,
        max_length=64,
        description="default: now; RFC 3339, + written as %2B",
        json_schema_extra={"format": "date-time", "pattern": TIME_PATTERN},
    )


class RecordQuery(_Query):
    incident_id: str | None = Field(None, max_length=64)
    unit: str | None = Field(None, max_length=64)
    status: Literal["open", "decided"] | None = None


class ReportQuery(_Query):
    format: Literal["json", "csv", "html"] = Field(
        "json", description="html: printable (A4); csv: the timeline or the figures"
    )


class QuarterlyQuery(ReportQuery):
    year: int = Field(ge=2000, le=2999)
    quarter: int = Field(ge=1, le=4)


# -- handlers -------------------------------------------------------------------------------


async def _incident(request: web.Request, iid: str) -> dict[str, Any]:
    return await queries.incident(request.app[DB], request.app[CFG], iid)


IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Send the same key again with the same request (a retry after a timeout)"
    " and the first request's answer is given again, with `Idempotent-Replayed: true`; nothing"
    " is changed twice. Keys belong to the user; a key already used for a different request is"
    " refused (422).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}


def once(request: web.Request, who: str, data: BaseModel) -> Once | None:
    """The request's Idempotency-Key, if it sent one (see :mod:`responder.idempotency`)."""
    values = request.headers.getall("Idempotency-Key", [])
    if not values:
        return None
    value = values[0]
    if len(values) > 1 or not 1 <= len(value) <= 255 or not all("!" <= c <= "~" for c in value):
        raise BadRequest(
            "bad_idempotency_key",
            "Idempotency-Key 须为一个、1–255 个可见 ASCII 字符",
            "Idempotency-Key must be given once, 1 to 255 visible ASCII characters",
        )
    route = request[ROUTE]
    return Once.of(
        who,
        value,
        f"{route.method} {route.path}",
        data.model_dump(mode="json"),
        dict(request.match_info),
    )


def replayed(response: web.Response, keyed: Once | None) -> web.Response:
    if keyed is not None and keyed.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def declare_incident(request: web.Request) -> web.Response:
    user = await require(request, OPERATE)
    data = await body(request)
    keyed = once(request, actor(user), data)
    iid = await request.app[OPS].declare(data, actor(user), keyed)
    response = answer(request, await _incident(request, iid))
    response.headers["Location"] = f"/api/v1/incidents/{iid}"
    return replayed(response, keyed)


async def list_incidents(request: web.Request) -> web.Response:
    await require(request, READ)
    q = query(request)
    return answer(
        request, await queries.incidents(request.app[DB], request.app[CFG], **q.model_dump())
    )


async def get_incident(request: web.Request) -> web.Response:
    await require(request, READ)
    return answer(request, await _incident(request, incident_id(request)))


Change = Callable[[Ops, str, Any, str, Once | None], Awaitable[dict[str, Any]]]


async def _change(request: web.Request, call: Change) -> web.Response:
    """A change to an incident: check the role, parse the body, call ops, answer with the
    result and the incident as it now stands."""
    user = await require(request, OPERATE)
    data = await body(request)
    iid = incident_id(request)
    keyed = once(request, actor(user), data)
    result = await call(request.app[OPS], iid, data, actor(user), keyed)
    return replayed(answer(request, {**result, "incident": await _incident(request, iid)}), keyed)


async def change_level(request: web.Request) -> web.Response:
    return await _change(
        request, lambda ops, iid, data, who, keyed: ops.change_level(iid, data, who, keyed)
    )


async def close_incident(request: web.Request) -> web.Response:
    return await _change(
        request, lambda ops, iid, data, who, keyed: ops.close(iid, data, who, keyed)
    )


async def incident_timeline(request: web.Request) -> web.Response:
    await require(request, READ)
    return answer(
        request, await queries.timeline(request.app[DB], request.app[CFG], incident_id(request))
    )


async def record_release(request: web.Request) -> web.Response:
    return await _change(
        request,
        lambda ops, iid, data, who, keyed: ops.record_release(
            iid, data, who, "authoritative", keyed
        ),
    )


async def record_follow_up(request: web.Request) -> web.Response:
    return await _change(
        request,
        lambda ops, iid, data, who, keyed: ops.record_release(iid, data, who, "follow_up", keyed),
    )


async def schedule_press_conference(request: web.Request) -> web.Response:
    return await _change(
        request,
        lambda ops, iid, data, who, keyed: ops.schedule_press_conference(iid, data, who, keyed),
    )


async def reschedule_press_conference(request: web.Request) -> web.Response:
    return await _change(
        request,
        lambda ops, iid, data, who, keyed: ops.reschedule_press_conference(
            iid, int_param(request, "press_conference_id"), data, who, keyed
        ),
    )


async def press_conference_held(request: web.Request) -> web.Response:
    return await _change(
        request,
        lambda ops, iid, data, who, keyed: ops.press_conference_held(
            iid, data, who, data.press_conference_id, keyed
        ),
    )


async def incident_notifications(request: web.Request) -> web.Response:
    await require(request, READ)
    return answer(
        request,
        await queries.notifications(request.app[DB], request.app[CFG], incident_id(request)),
    )


async def list_accountability(request: web.Request) -> web.Response:
    await require(request, READ)
    q = query(request)
    return answer(
        request,
        await queries.accountability_records(request.app[DB], request.app[CFG], **q.model_dump()),
    )


async def get_accountability(request: web.Request) -> web.Response:
    await require(request, READ)
    rid = int_param(request, "record_id")
    return answer(
        request, await queries.accountability_record(request.app[DB], request.app[CFG], rid)
    )


async def _review(request: web.Request, record_id: int) -> dict[str, Any]:
    return await records.record_file(
        request.app[DB], request.app[CFG], record_id, request.app[CLOCK].now()
    )


async def review_record(request: web.Request) -> web.Response:
    await require(request, READ)
    return answer(request, await _review(request, int_param(request, "record_id")))


Review = Callable[[Ops, int, Any, str], Awaitable[dict[str, Any]]]


async def _reviewed(request: web.Request, call: Review) -> web.Response:
    """A reviewer's change to a record: check the role, parse the body, call ops, answer
    with the result and the record as it now stands."""
    user = await require(request, REVIEW)
    data = await body(request)
    rid = int_param(request, "record_id")
    result = await call(request.app[OPS], rid, data, actor(user))
    return answer(request, {**result, "record": await _review(request, rid)})


async def decide_record(request: web.Request) -> web.Response:
    return await _reviewed(request, lambda ops, rid, data, who: ops.decide(rid, data, who))


async def record_interview(request: web.Request) -> web.Response:
    return await _reviewed(
        request, lambda ops, rid, data, who: ops.record_interview(rid, data, who)
    )


async def record_correction_report(request: web.Request) -> web.Response:
    return await _reviewed(
        request, lambda ops, rid, data, who: ops.record_correction_report(rid, data, who)
    )


def _report_answer(request: web.Request, report: dict[str, Any], fmt: Any) -> web.Response:
    if fmt == "json":
        return answer(request, report)
    name = render.filename(report, fmt)
    return web.Response(
        text=render.render(report, fmt, standalone=False),
        content_type=render.MEDIA[fmt],
        charset="utf-8",
        headers={"Content-Disposition": f'inline; filename="{name}"'},
    )


async def incident_report(request: web.Request) -> web.Response:
    user = await require(request, READ)
    q = query(request)
    report = await render.incident_report(request.app[OPS], incident_id(request), actor(user))
    return _report_answer(request, report, q.format)


async def quarterly_report(request: web.Request) -> web.Response:
    user = await require(request, READ)
    q = query(request)
    report = await render.quarterly_report(request.app[OPS], q.year, q.quarter, actor(user))
    return _report_answer(request, report, q.format)


async def get_plan(request: web.Request) -> web.Response:
    await require(request, READ)
    q = query(request)
    cfg = request.app[CFG]
    occurred = parse_time(q.occurred_at, "occurred_at")
    if q.declared_at:
        now = parse_time(q.declared_at, "declared_at")
    else:  # as a declaration now would: a client clock a little fast is taken as ours
        real = request.app[CLOCK].now()
        now = next_whole_second(real)
        # Against the clock itself, as a declaration at this instant takes it (its second,
        # rounded down), not the preview's rounded-up "now": the deadlines agree to the second.
        occurred = at_most_now(occurred, real)
    if occurred > now:
        raise BadInput(
            "time_in_future",
            "occurred_at 不能晚于申报时间",
            "occurred_at cannot be after the declaration time",
        )
    return answer(request, preview(cfg, q.level, occurred, now))


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI], dumps=_dumps)


ROUTES: list[Route] = [
    Route("POST", "/incidents", declare_incident, "Declare an incident (申报突发事件)", OPERATE,
          body=DeclareIncident, response=schemas.Incident, status=201,
          headers=(IDEMPOTENCY_KEY,), location=True),
    Route("GET", "/incidents", list_incidents, "List incidents", READ,
          query=IncidentQuery, response=schemas.IncidentList),
    Route("GET", "/incidents/{incident_id}", get_incident, "Get one incident with its obligations",
          READ, response=schemas.Incident, errors=(404,)),
    Route("POST", "/incidents/{incident_id}/level", change_level, "Raise or lower the level",
          OPERATE, body=ChangeLevel, response=schemas.LevelChangeResult, errors=(404, 409),
          headers=(IDEMPOTENCY_KEY,)),
    Route("POST", "/incidents/{incident_id}/close", close_incident, "Close the incident",
          OPERATE, body=CloseIncident, response=schemas.CloseResult, errors=(404, 409),
          headers=(IDEMPOTENCY_KEY,)),
    Route("GET", "/incidents/{incident_id}/timeline", incident_timeline,
          "The incident's audit trail", READ, response=schemas.TimelineEntry, many=True,
          errors=(404,)),
    Route("POST", "/incidents/{incident_id}/releases", record_release,
          "Record the authoritative release (发布权威信息)", OPERATE, body=RecordRelease,
          response=schemas.ReleaseResult, status=201, errors=(404, 409),
          headers=(IDEMPOTENCY_KEY,)),
    Route("POST", "/incidents/{incident_id}/follow-ups", record_follow_up,
          "Record a follow-up release (持续发布)", OPERATE, body=RecordRelease,
          response=schemas.ReleaseResult, status=201, errors=(404, 409),
          headers=(IDEMPOTENCY_KEY,)),
    Route("POST", "/incidents/{incident_id}/press-conferences", schedule_press_conference,
          "Schedule a press conference", OPERATE, body=SchedulePressConference,
          response=schemas.PressConferenceResult, status=201, errors=(404, 409),
          headers=(IDEMPOTENCY_KEY,)),
    Route("POST", "/incidents/{incident_id}/press-conferences/{press_conference_id}/reschedule",
          reschedule_press_conference, "Reschedule a press conference", OPERATE,
          body=ReschedulePressConference, response=schemas.PressConferenceResult,
          errors=(404, 409),
          headers=(IDEMPOTENCY_KEY,)),
    Route("POST", "/incidents/{incident_id}/press-conferences/held", press_conference_held,
          "Record that a press conference was held (举行新闻发布会)", OPERATE,
          body=PressConferenceHeld, response=schemas.PressConferenceResult, errors=(404, 409),
          headers=(IDEMPOTENCY_KEY,)),
    Route("GET", "/incidents/{incident_id}/notifications", incident_notifications,
          "Messages sent about the incident (contacts masked)", READ,
          response=schemas.Notification, many=True, errors=(404,)),
    Route("GET", "/accountability", list_accountability, "Accountability records", READ,
          query=RecordQuery, response=schemas.AccountabilityRecordSummary, many=True,
          tag="accountability"),
    Route("GET", "/accountability/{record_id}", get_accountability,
          "One accountability record with the notifications about it", READ,
          response=schemas.AccountabilityRecord, errors=(404,), tag="accountability"),
    Route("GET", "/accountability/{record_id}/review", review_record,
          "The complete record for review: facts, clause, proposal, decisions, interview,"
          " correction and the evidence timeline", READ, response=schemas.ReviewRecord,
          errors=(404,), tag="accountability"),
    Route("POST", "/accountability/{record_id}/decisions", decide_record,
          "Decide a record (accept, change or exempt), or correct its current decision"
          " (`corrects`); a decision is never changed", REVIEW, body=Decide,
          response=schemas.ReviewResult, status=201, errors=(404, 409), tag="accountability"),
    Route("POST", "/accountability/{record_id}/interview", record_interview,
          "Record the interview (约谈) the current decision asked for; its correction's"
          " deadline starts the reminders to the unit's head", REVIEW, body=RecordInterview,
          response=schemas.ReviewResult, status=201, errors=(404, 409), tag="accountability"),
    Route("POST", "/accountability/{record_id}/correction-report", record_correction_report,
          "Record the unit's correction report (整改报告); the reminders stop", REVIEW,
          body=CorrectionReport, response=schemas.ReviewResult, errors=(404, 409),
          tag="accountability"),
    Route("GET", "/reports/incidents/{incident_id}", incident_report,
          "The per-incident report, sealed in the audit log (its head in `audit`)", READ,
          query=ReportQuery, response=schemas.Report, errors=(404,), tag="reports",
          media=("text/csv", "text/html")),
    Route("GET", "/reports/quarterly", quarterly_report,
          "The quarterly notice of every unit, sealed in the audit log (drills apart)", READ,
          query=QuarterlyQuery, response=schemas.Report, tag="reports",
          media=("text/csv", "text/html")),
    Route("GET", "/plan", get_plan, "What a declaration would plan (as `responder plan`)", READ,
          query=PlanQuery, response=schemas.Plan, tag="plan"),
]  # fmt: skip

OPENAPI = web.AppKey("openapi", dict)


class _NoQuery(BaseModel):
    """What a route without query parameters takes: none.  ``?status=failed`` on the list of
    an incident's notifications was ignored, and everything listed — a misspelt or imagined
    filter must be refused (422, naming it) as it is where filters exist."""

    model_config = ConfigDict(extra="forbid")


def _bind(route: Route) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        request[ROUTE] = route
        if route.query is None and request.query:
            _NoQuery.model_validate(dict(request.query))  # raises, naming each parameter
        return await route.handler(request)

    return handler


def setup(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, "/api/v1" + route.path, _bind(route))
    app.router.add_get("/api/v1/openapi.json", openapi_document)
    app[OPENAPI] = schemas.for_deployment(openapi(ROUTES), [u.id for u in app[CFG].units])
