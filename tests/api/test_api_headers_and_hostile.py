"""Answer headers, hostile strings, logging of hostile requests, and what the OpenAPI
document says of answers.

Time is the FakeClock's (2026-11-26 09:00 +08:00), over a real socket."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from yarl import URL

from tests.api_helpers import (
    INCIDENTS,
    INJECTIONS,
    assert_security_headers,
    ok,
    refused,
)
from tests.web_helpers import Web, assert_error_body

pytest_plugins = ["tests.web_fixtures"]


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
