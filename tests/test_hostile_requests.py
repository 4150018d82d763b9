"""Requests no well-behaved client sends: bytes that are not UTF-8 in credentials, values of
the wrong JSON type, control characters in text, headers given twice, bodies the service
cannot decode.  Each gets a clear 4xx and changes nothing; none is a 500.

Some are sent as raw bytes on a socket: aiohttp's own client refuses to send them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from tests.web_helpers import Web

pytest_plugins = ["tests.web_fixtures"]


async def raw(web: Web, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, without the blank line) and ``body``; return
    the status, the headers (lower-case names) and the body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    try:
        writer.write(head + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        # Read the answer by its length, not to the end: a 413 may come while the service
        # still waits for a body that is never sent.
        top = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = top.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        content = await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()
    return int(lines[0].split()[1]), headers, content


# -- credentials that are not UTF-8 ---------------------------------------------------------


@pytest.mark.parametrize("token", [b"rsp_\xe9", b"\xff", b"rsp_\xc3\xa9"])  # the last is é
@pytest.mark.parametrize("path", [b"/api/v1/incidents", b"/metrics"])
async def test_a_bearer_token_of_any_bytes_is_401_not_500(
    web: Web, token: bytes, path: bytes
) -> None:
    """Headers are decoded with undecodable bytes kept as surrogates: hashing such a token
    raised UnicodeEncodeError, a 500 on every authenticated route for anyone."""
    status, headers, body = await raw(
        web, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token
    )
    assert status == 401
    assert json.loads(body)["error"] == "unauthorized"
    assert headers["www-authenticate"].startswith("Bearer")


async def test_a_session_cookie_of_any_bytes_is_no_session(web: Web) -> None:
    status, headers, _ = await raw(
        web, b"GET / HTTP/1.1\r\nHost: x\r\nCookie: responder_session=abc.\xff\xfe"
    )
    assert status == 303 and headers["location"].startswith("/login")


async def test_sign_in_with_a_foreign_login_cookie_or_token_is_refused_not_500(web: Web) -> None:
    """The login nonce cookie and the form's token are compared with our own HMAC; a value
    hmac.compare_digest cannot take (non-ASCII) was a TypeError."""
    form = b"csrf=%C3%A9%C3%A9&username=chen&password=x"
    for cookie in (b"responder_login=\xff\xfe", b"responder_login=AAAAAAAAAAAAAAAAAAAA"):
        status, _, page = await raw(
            web,
            b"POST /login HTTP/1.1\r\nHost: x\r\nCookie: " + cookie + b"\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: " + str(len(form)).encode(),
            form,
        )
        assert status == 403, page[:300]
        assert "登录表单已失效".encode() in page


@pytest.mark.parametrize("token", ["%C3%A9", "%FF", "%E4%BD%A0%E5%A5%BD"])
async def test_an_acknowledgement_link_with_any_token_is_not_found(web: Web, token: str) -> None:
    for method in ("GET", "POST"):
        status, _, page = await raw(
            web, f"{method} /ack/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 0".encode()
        )
        assert status == 404, page[:300]
        assert "确认链接无效".encode() in page


# -- values of the wrong JSON type, control characters ----------------------------------------


async def refused(resp: Any, status: int, code: str) -> dict[str, Any]:
    data = await resp.json()
    assert resp.status == status, data
    assert data["error"] == code, data
    return data


@pytest.mark.parametrize("drill", ["yes", "0", 1, 0.0])
async def test_a_flag_must_be_true_or_false(web: Web, drill: Any) -> None:
    """pydantic's lax mode took "yes", "0" and 1 as booleans: a client's bug recorded as a
    drill (or not) in an audit log that cannot be edited."""
    resp = await web.post("/api/v1/incidents", web.declaration(drill=drill))
    data = await refused(resp, 422, "invalid")
    assert data["detail"][0]["field"] == "drill"
    assert data["detail"][0]["problem_zh"] == "须为 true 或 false"
    assert await web.count("incidents") == 0


async def test_an_id_must_be_a_number_not_true_or_text(web: Web) -> None:
    """``true`` was taken as press conference 1 — and recorded it as held.  (1.0 is the number 1,
    as JSON Schema counts it; 1.5 is no id.)"""
    iid = (await web.declare())["id"]
    resp = await web.post(
        f"/api/v1/incidents/{iid}/press-conferences",
        {"scheduled_at": web.at(hours=2), "venue": "市政府新闻发布厅"},
    )
    assert resp.status == 201, await resp.text()
    for wrong in (True, "1", 1.5):
        resp = await web.post(
            f"/api/v1/incidents/{iid}/press-conferences/held",
            {"press_conference_id": wrong, "held_at": web.at(minutes=-1),
             "principal_leader_spoke": True},
        )  # fmt: skip
        await refused(resp, 422, "invalid")
    resp = await web.post(
        f"/api/v1/incidents/{iid}/press-conferences/held",
        {"held_at": web.at(minutes=-1), "principal_leader_spoke": "yes"},
    )
    await refused(resp, 422, "invalid")
    assert await web.count("press_conferences", "held_at IS NOT NULL") == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "储罐\x00爆炸"),
        ("title", "储罐爆炸\r\n抄送"),
        ("location", "\x1b[31m园区"),
        ("summary", "起火\x07"),
        ("summary", "起火\x7f"),
        ("lead_unit", "emergency\x00"),
    ],
)
async def test_control_characters_in_text_are_refused(web: Web, field: str, value: str) -> None:
    """Text goes into SMS, voice and mail: a NUL cut short at a gateway written in C takes
    the deadline and the acknowledgement link with it."""
    resp = await web.post("/api/v1/incidents", web.declaration(**{field: value}))
    data = await refused(resp, 422, "invalid")
    assert data["detail"][0]["field"] == field
    assert data["detail"][0]["problem"].startswith("must not contain control characters")
    assert data["detail"][0]["problem_zh"].startswith("不能包含控制字符")
    assert await web.count("incidents") == 0


async def test_line_breaks_and_tabs_stay_where_text_may_have_lines(web: Web) -> None:
    incident = await web.declare(summary="储罐区发生爆炸。\n\t已疏散周边群众。")
    assert incident["summary"] == "储罐区发生爆炸。\n\t已疏散周边群众。"
    resp = await web.post(
        f"/api/v1/incidents/{incident['id']}/close", {"reason": "处置完毕。\r\n转入善后。"}
    )
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("title", ["\u200b", "\ufeff\u200b\u2060"])
async def test_a_title_of_invisible_characters_only_is_refused(web: Web, title: str) -> None:
    resp = await web.post("/api/v1/incidents", web.declaration(title=title))
    data = await refused(resp, 422, "invalid")
    assert data["detail"][0]["problem"] == "must contain visible characters"
    assert await web.count("incidents") == 0


# -- headers given twice, bodies that cannot be decoded --------------------------------------


async def test_two_authorization_headers_are_refused_whatever_their_order(web: Web) -> None:
    good = web.tokens["admin"].encode()
    for first, second in ((b"bogus", good), (good, b"bogus"), (good, good)):
        status, _, body = await raw(
            web,
            b"GET /api/v1/incidents HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + first + b"\r\nAuthorization: Bearer " + second,
        )
        assert status == 400, body
        assert json.loads(body)["message_en"].startswith("the request has more than one")


async def test_two_idempotency_keys_are_refused(web: Web) -> None:
    body = json.dumps(web.declaration()).encode()
    status, _, answer = await raw(
        web,
        b"POST /api/v1/incidents HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + web.tokens["admin"].encode() + b"\r\n"
        b"Content-Type: application/json\r\nIdempotency-Key: dup-a\r\nIdempotency-Key: dup-b\r\n"
        b"Content-Length: " + str(len(body)).encode(),
        body,
    )
    assert status == 400 and json.loads(answer)["error"] == "bad_idempotency_key"
    assert await web.count("incidents") == 0


@pytest.mark.parametrize("coding", ["x-foo", "gzip, br", "compress"])
async def test_a_body_in_an_unknown_coding_is_415(web: Web, coding: str) -> None:
    """aiohttp read an unknown coding as plain bytes: a declaration went through.  (br alone
    aiohttp refuses itself, before the service sees the request: a plain-text 400.)"""
    resp = await web.call(
        "POST",
        "/api/v1/incidents",
        data=json.dumps(web.declaration()).encode(),
        headers={"Content-Type": "application/json", "Content-Encoding": coding},
    )
    await refused(resp, 415, "unsupported_encoding")
    assert await web.count("incidents") == 0


async def test_a_body_announced_too_large_is_413_before_it_is_sent(web: Web) -> None:
    """Answered from the Content-Length alone: the client sends only the headers."""
    status, _, body = await raw(
        web,
        b"POST /api/v1/incidents HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + web.tokens["admin"].encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 300000",
    )
    assert status == 413 and json.loads(body)["error"] == "too_large"


async def test_deep_nesting_is_named_and_many_wrong_fields_are_listed_in_part(web: Web) -> None:
    deep = '{"title": "t", "co_units": ' + "[" * 100_000 + "]" * 100_000 + "}"
    resp = await web.call(
        "POST",
        "/api/v1/incidents",
        data=deep.encode(),
        headers={"Content-Type": "application/json"},
    )
    data = await refused(resp, 400, "bad_json")
    assert data["message_en"] == "the body's JSON nests too deeply"
    many = {**web.declaration(), **{f"extra_{i}": 1 for i in range(5000)}}
    resp = await web.post("/api/v1/incidents", many)
    data = await refused(resp, 422, "invalid")
    assert len(data["detail"]) == 100
    assert data["message_en"].endswith("; and 4995 more")


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "www.gov.cn/a", "https://"],
)
async def test_a_release_address_must_be_a_web_address(web: Web, url: str) -> None:
    """Where the release was published: a page people can open.  A javascript: address would
    be a link that runs code wherever a page shows it."""
    iid = (await web.declare())["id"]
    resp = await web.post(
        f"/api/v1/incidents/{iid}/releases", {"published_at": web.at(minutes=-1), "url": url}
    )
    data = await refused(resp, 422, "invalid")
    assert data["detail"][0]["field"] == "url"
    assert data["detail"][0]["problem"].startswith("must be a web address")
    assert await web.count("releases") == 0
    resp = await web.post(
        f"/api/v1/incidents/{iid}/releases",
        {"published_at": web.at(minutes=-1), "url": "HTTPS://www.example.gov.cn/xw/1.html"},
    )
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/incidents/{iid}?stauts=active",
        "/api/v1/incidents/{iid}/notifications?status=failed",
        "/api/v1/incidents/{iid}/timeline?since=5",
    ],
)
async def test_a_query_parameter_a_route_does_not_take_is_refused(web: Web, path: str) -> None:
    """A filter that does not exist was ignored and everything listed — an integrator
    believing ?status=failed worked would read every message as failed."""
    iid = (await web.declare())["id"]
    resp = await web.get(path.format(iid=iid))
    data = await refused(resp, 422, "invalid")
    assert data["detail"][0]["type"] == "extra_forbidden"
    assert data["detail"][0]["problem_zh"] == "不认识此字段(请检查拼写)"


async def test_a_plan_and_a_declaration_at_the_same_instant_agree_to_the_second(web: Web) -> None:
    """occurred_at a little ahead of the service's clock is taken as its current second; the
    preview rounded its own "now" up first, and gave deadlines one second later."""
    web.clock.advance(timedelta(microseconds=400_000))  # mid-second
    ahead = web.at(seconds=30)
    plan = await (
        await web.get("/api/v1/plan", params={"level": "II", "occurred_at": ahead})
    ).json()
    incident = await web.declare(occurred_at=ahead)
    assert plan["occurred_at"] == incident["occurred_at"]
    planned = {o["kind"]: o["deadline"] for o in plan["obligations"]}
    assert planned == {o["kind"]: o["deadline"] for o in incident["obligations"]}


async def test_the_record_list_does_not_claim_nobody_was_told(web: Web) -> None:
    """The list carried "notifications": [] on every record (read: no one was told); who was
    told is in GET /accountability/{id}, and the list no longer has the field."""
    incident = await web.declare(occurred_at=web.at(hours=-6))  # breached at once
    listed = await (await web.get(f"/api/v1/accountability?incident_id={incident['id']}")).json()
    assert listed and "notifications" not in listed[0]
    one = await (await web.get(f"/api/v1/accountability/{listed[0]['id']}")).json()
    assert "notifications" in one
