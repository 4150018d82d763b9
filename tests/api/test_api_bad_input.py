"""Bad input: every refusal is a clear 4xx with {error, detail, message, message_en} and
changes nothing; no client input yields a 500.

Time is the FakeClock's (2026-11-26 09:00 +08:00), over a real socket."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from responder.errors import API_CODES, NOT_API_CODES
from tests.api_helpers import (
    EXTREME_TIMES,
    INCIDENTS,
    _error_classes,
    ok,
    refused,
)
from tests.web_helpers import Web, assert_error_body

pytest_plugins = ["tests.web_fixtures"]


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
    root = Path(__file__).resolve().parents[2] / "responder"
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
