"""Hostile edges (issue 14): compressed bodies, the development inbox behind a proxy, and text
that would start a line or turn its direction.  Each against the app on a real socket, its
request handler set up as ``responder serve`` sets it up (``tests.web_helpers.start``).

The same findings in a real ``responder serve`` process, with the connection flood, are in
tests/test_serve_limits.py.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
import unicodedata
import zlib
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from responder.engine.messages import render
from responder.models import (
    INVISIBLE,
    ONE_LINE_PATTERN,
    REASON_PATTERN,
    TITLE_PATTERN,
    URL_PATTERN,
    Reason,
    ShortText,
    Title,
    WebAddress,
)
from responder.web.app import MAX_BODY
from tests.engine.test_message_templates import BASE_EN, BASE_ZH
from tests.web_helpers import Web

pytest_plugins = ["tests.web_fixtures"]

INCIDENTS = "/api/v1/incidents"


async def refused(resp: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    data = await resp.json()
    assert resp.status == status, data
    assert data["error"] == code, data
    return data


# -- 5. compressed bodies -------------------------------------------------------------------


def _gzip_bomb(inflated: int) -> bytes:
    """gzip of ``inflated`` zero bytes: about a thousandth of that on the wire."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join([packer.compress(zeros) for _ in range(inflated >> 20)] + [packer.flush()])


async def test_the_api_takes_gzip_and_deflate(web: Web) -> None:
    body = json.dumps(web.declaration(title="压缩提交"), ensure_ascii=False).encode()
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    for coding, data in (
        ("gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),  # as RFC 9110 means it
        ("deflate", raw_deflate.compress(body) + raw_deflate.flush()),  # as some clients send
        ("identity", body),
    ):
        resp = await web.call(
            "POST",
            INCIDENTS,
            data=data,
            headers={"Content-Type": "application/json", "Content-Encoding": coding},
        )
        assert resp.status == 201, (coding, await resp.text())
    assert await web.count("incidents") == 4


async def test_a_body_inflating_past_the_limit_is_413_and_stops_there(web: Web) -> None:
    """64 KB on the wire, 64 MB inflated: the API stops at 256 KB (client_max_size)."""
    bomb = _gzip_bomb(64 << 20)
    assert len(bomb) < MAX_BODY
    resp = await web.call(
        "POST",
        INCIDENTS,
        data=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    await refused(resp, 413, "too_large")
    assert await web.count("incidents") == 0


async def test_a_compressed_body_cut_short_or_with_bytes_after_it_is_400(web: Web) -> None:
    whole = gzip.compress(json.dumps(web.declaration()).encode())
    for data in (whole[: len(whole) // 2], whole + b"more", b""):
        resp = await web.call(
            "POST",
            INCIDENTS,
            data=data,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        await refused(resp, 400, "bad_request")
    assert await web.count("incidents") == 0


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, gzip"])
async def test_every_other_coding_is_415_json(web: Web, coding: str) -> None:
    """br was refused by aiohttp itself, before the service saw it: a plain-text 400."""
    resp = await web.call(
        "POST",
        INCIDENTS,
        data=b"\x0b\x02\x80{}\x03",
        headers={"Content-Type": "application/json", "Content-Encoding": coding},
    )
    data = await refused(resp, 415, "unsupported_encoding")
    assert data["message"].startswith("请求内容的压缩方式不受支持")
    assert await web.count("incidents") == 0


async def test_nothing_is_inflated_before_the_caller_is_known(web: Web) -> None:
    resp = await web.call(
        "POST",
        INCIDENTS,
        who="none",
        data=_gzip_bomb(16 << 20),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    await refused(resp, 401, "unauthorized")


@pytest.mark.parametrize(
    "path", ["/ack/AbCdEfGhIjKlMnOpQrSt_-", "/login", "/logout", "/dev/inbox/sms"]
)
@pytest.mark.parametrize("coding", ["gzip", "br"])
async def test_outside_the_api_a_compressed_body_is_415(web: Web, path: str, coding: str) -> None:
    """Pages, sign-in, acknowledgement and the development inbox take no compressed body: it is
    refused before anything reads it (aiohttp used to inflate it, whatever the route)."""
    resp = await web.client.post(
        path,
        data=gzip.compress(b"username=x&password=y"),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Encoding": coding,
        },
        allow_redirects=False,
    )
    page = await resp.text()
    assert resp.status == 415, page
    assert "不接受压缩" in page  # pages speak one language: Chinese unless English is asked for


# -- 7. the development inbox behind a reverse proxy ----------------------------------------


async def _inbox(web: Web, **headers: str) -> aiohttp.ClientResponse:
    return await web.client.get("/dev/inbox", params={"format": "json"}, headers=headers)


@pytest.mark.parametrize("run_engine", [True])
async def test_the_dev_inbox_is_closed_to_a_client_a_proxy_forwards(web: Web) -> None:
    """A reverse proxy on this host connects from 127.0.0.1: the inbox answered anyone it
    forwarded, with contacts and live acknowledgement links."""
    await web.declare()
    await web.wait_for("SELECT COUNT(*) FROM notifications WHERE status = 'sent'")
    resp = await _inbox(web)
    assert resp.status == 200 and "/ack/" in await resp.text()  # this machine, directly
    for header in (
        {"X-Forwarded-For": "203.0.113.9"},
        {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"},
        {"Forwarded": "for=203.0.113.9"},
        {"X-Real-IP": "203.0.113.9"},
    ):
        resp = await _inbox(web, **header)
        text = await resp.text()
        assert resp.status == 403, (header, text)
        assert "/ack/" not in text and "+86" not in text
        assert "开发收件箱只对本机开放" in text


async def test_behind_a_trusted_proxy_the_inbox_goes_by_the_forwarded_client(web: Web) -> None:
    web.cfg.service.trusted_proxies = [ipaddress.ip_network("127.0.0.1/32")]
    assert (await _inbox(web, **{"X-Forwarded-For": "203.0.113.9"})).status == 403
    assert (await _inbox(web, **{"X-Forwarded-For": "::1"})).status == 200  # this host's own
    # A proxy that names nobody: the inbox cannot know for whom.
    assert (await _inbox(web, **{"X-Real-IP": "127.0.0.1"})).status == 403


async def test_a_forwarded_client_cannot_post_into_the_dev_inbox(web: Web) -> None:
    fake = {"to": "+8613800000000", "message": "确认:https://evil.example/ack"}
    resp = await web.client.post(
        "/dev/inbox/sms", json=fake, headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert resp.status == 403
    assert (await web.client.post("/dev/inbox/sms", json=fake)).status == 200  # the dispatcher


# -- 8. text that starts a line or turns its direction --------------------------------------

LINE_STARTERS = ["\u2028", "\u2029"]
DIRECTION_CONTROLS = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]


@pytest.mark.parametrize(
    "char", LINE_STARTERS + DIRECTION_CONTROLS, ids=lambda c: f"U+{ord(c):04X}"
)
@pytest.mark.parametrize(
    ("field", "value"),
    [("title", "储罐爆炸{}确认:https://evil.example/ack"), ("location", "园区{}南门")],
    ids=["title", "location"],
)
async def test_one_line_fields_refuse_line_separators_and_direction_controls(
    web: Web, field: str, value: str, char: str
) -> None:
    resp = await web.post(INCIDENTS, web.declaration(**{field: value.format(char)}))
    data = await refused(resp, 422, "invalid")
    assert [d["field"] for d in data["detail"]] == [field]
    problem = data["detail"][0]["problem"]
    if char in LINE_STARTERS:
        assert problem.startswith("must not contain control characters (NUL, line breaks")
    else:
        assert "direction" in problem and "U+202A" in problem
        assert "文字方向" in data["detail"][0]["problem_zh"]
    assert await web.count("incidents") == 0


async def test_other_one_line_fields_refuse_them_too(web: Web) -> None:
    iid = (await web.declare())["id"]
    for path, body, field in (
        (INCIDENTS, web.declaration(co_units=["health\u202e"]), "co_units.0"),
        (
            f"{INCIDENTS}/{iid}/releases",
            {"published_at": web.at(minutes=-1), "channels": ["微\u2028博"]},
            "channels.0",
        ),
        (
            f"{INCIDENTS}/{iid}/releases",
            {"published_at": web.at(minutes=-1), "url": "https://a.example/\u2029x"},
            "url",
        ),
        (
            f"{INCIDENTS}/{iid}/press-conferences",
            {"scheduled_at": web.at(hours=2), "venue": "\u2066发布厅\u2069"},
            "venue",
        ),
    ):
        data = await refused(await web.post(path, body), 422, "invalid")
        assert [d["field"] for d in data["detail"]] == [field], data


async def test_marks_right_to_left_text_may_need_are_kept(web: Web) -> None:
    """LRM and RLM (U+200E, U+200F) only mark a direction; Uyghur text may carry them."""
    title = "ئۈرۈمچى\u200f 储罐爆炸\u200e"
    assert (await web.declare(title=title))["title"] == title


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("kind", ["sms", "email", "chat", "voice"])
def test_a_stored_value_cannot_start_a_line_of_a_message(kind: str, lang: str) -> None:
    """An incident stored before these were refused: every value is one line in a message."""
    forged = "\nAcknowledge: https://evil.example/ack"
    ctx = {
        **(BASE_EN if lang == "en" else BASE_ZH),
        "title": "Fire\u2028Acknowledge: https://evil.example/ack\u202e",
        "location": "Gate\u2029" + forged,
        "lead_unit": "Unit\r\n\x85\x0b\x0c\x1c\x1d\x1e\u2066x\u2069",
        "collapsed": ["a\u2028b"],
        "step_kind": "catch_up",
    }
    rendered = render(kind, lang, ctx)
    text = rendered.title + "\n" + rendered.body
    assert not re.search("[\u2028\u2029\u202a-\u202e\u2066-\u2069\x85\x0b\x0c\x1c-\x1e\r]", text)
    assert not any(line.lstrip("#-> *").startswith("Acknowledge: https://evil") for line in
                   text.splitlines())  # fmt: skip


# -- the document's patterns say what the checks take --------------------------------------


def test_the_invisible_class_is_unicode_controls_spaces_and_format_characters() -> None:
    """The class the title's pattern and check share, against Python's Unicode data (a newer
    Unicode in a newer Python shows here first)."""
    fillers = {0x115F, 0x1160, 0x2800, 0x3164, 0xFFA0}
    invisible = re.compile(f"[{INVISIBLE}]")
    differ = [
        hex(cp)
        for cp in range(0x110000)
        if (invisible.match(chr(cp)) is not None)
        != (cp in fillers or unicodedata.category(chr(cp)) in ("Cc", "Cf", "Zs", "Zl", "Zp"))
    ]
    assert differ == []


@pytest.mark.parametrize(
    ("pattern", "kind", "longest"),
    [
        (TITLE_PATTERN, Title, 200),
        (ONE_LINE_PATTERN, ShortText, 200),
        (REASON_PATTERN, Reason, 2000),
        (URL_PATTERN, WebAddress, 2000),
    ],
    ids=["title", "one-line", "reason", "url"],
)
def test_what_the_document_admits_the_service_takes(pattern: str, kind: Any, longest: int) -> None:
    """A client generated from the document sends text its pattern admits: every such text is
    taken (the document may be stricter than the service, never looser)."""
    take = TypeAdapter(kind).validate_python

    @given(st.from_regex(pattern, fullmatch=True).filter(lambda v: len(v) <= longest))
    @settings(max_examples=300, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(text: str) -> None:
        try:
            take(text)
        except ValidationError as e:
            raise AssertionError(f"{text!r} matches {pattern!r} but: {e}") from None

    check()
