"""Prove the real test receivers in ``tests/sinks.py`` against apprise itself."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import apprise
import pytest
from apprise import AppriseResult, AppriseResultStatus

try:
    from tests.sinks import HttpSink, SmtpSink
except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ on sys.path
    from sinks import HttpSink, SmtpSink  # type: ignore[no-redef]

BODY = "突发事件: publish the first notice within 1 hour."
TITLE = "Deadline alert"


async def notify_one(url: str, **kwargs: Any) -> AppriseResult:
    """Send through a fresh Apprise holding only ``url`` and return its result.

    A fresh instance per send matters: most plugins (e-mail included) sleep
    ``request_rate_per_sec`` (5.5 s) between two sends of the same instance.
    """
    ap = apprise.Apprise()
    assert ap.add(url), f"apprise rejected {url}"
    return await ap.async_notify(body=kwargs.pop("body", BODY), title=TITLE, **kwargs)


def log_text(result: AppriseResult) -> str:
    """All log messages apprise captured for this call, one per line."""
    return "\n".join(entry.message for entry in result.logs())


async def test_mailto_reaches_smtp_sink() -> None:
    """mailto:// reaches SmtpSink with subject, body, From and To."""
    async with SmtpSink() as smtp:
        result = await notify_one(smtp.url_for("duty@example.gov.cn"))

        assert result.status is AppriseResultStatus.SUCCESS
        (service,) = result.results
        assert service.name == "E-Mail" and service.status is AppriseResultStatus.SUCCESS
        (message,) = await smtp.wait_for(1)
        assert message["Subject"] == TITLE
        assert message["From"].addresses[0].addr_spec == "responder@example.gov.cn"
        assert message["To"] == "duty@example.gov.cn"
        plain = message.get_body(("plain",))
        assert plain is not None and BODY in plain.get_content()
        assert smtp.envelopes[0].rcpt_tos == ["duty@example.gov.cn"]


async def test_mailto_to_several_recipients_sends_one_mail_each() -> None:
    """Comma-separated to= gives one SMTP transaction per recipient."""
    async with SmtpSink() as smtp:
        result = await notify_one(smtp.url_for("a@example.gov.cn,b@example.gov.cn"))

        assert result
        messages = await smtp.wait_for(2)
        assert sorted(str(m["To"]) for m in messages) == ["a@example.gov.cn", "b@example.gov.cn"]


async def test_json_reaches_http_sink_with_extra_keys_and_headers() -> None:
    """json:// posts the standard keys plus :to= and +X-Token."""
    async with HttpSink() as http:
        url = http.json_url("hooks/alert", headers={"X-Token": "t+1"}, to="+8613800000000")
        result = await notify_one(url, body_format=apprise.NotifyFormat.MARKDOWN)

        assert result.status is AppriseResultStatus.SUCCESS
        (request,) = await http.wait_for(1)
        assert (request.method, request.path) == ("POST", "/hooks/alert")
        assert request.headers["X-Token"] == "t+1"
        assert request.json == {
            "version": "1.0",
            "title": TITLE,
            "message": BODY,
            "attachments": [],
            "type": "info",
            "to": "+8613800000000",
        }


async def test_json_payload_keys_can_be_renamed_and_dropped() -> None:
    """:message=text renames a key; :title= (empty) drops it."""
    async with HttpSink() as http:
        result = await notify_one(http.json_url("x", message="text", title="", version=""))

        assert result
        (request,) = await http.wait_for(1)
        assert request.json == {"text": BODY, "attachments": [], "type": "info"}


async def test_form_reaches_http_sink() -> None:
    """form:// posts urlencoded fields, including the :to= extra."""
    async with HttpSink() as http:
        result = await notify_one(http.form_url("form", to="duty@example.gov.cn"))

        assert result
        (request,) = await http.wait_for(1)
        assert request.form == {
            "version": "1.0",
            "title": TITLE,
            "message": BODY,
            "type": "info",
            "to": "duty@example.gov.cn",
        }


async def test_http_500_is_reported_as_failure_with_error_text() -> None:
    """A 500 answer is a FAILURE whose captured log names the status."""
    async with HttpSink() as http:
        http.fail_next(1, status=500)
        failed = await notify_one(http.json_url("hook"))
        recovered = await notify_one(http.json_url("hook"))

        assert failed.status is AppriseResultStatus.FAILURE and not failed
        (service,) = failed.results
        assert service.status is AppriseResultStatus.FAILURE
        assert "error=500" in log_text(failed)
        assert recovered.status is AppriseResultStatus.SUCCESS
        assert [r.status for r in http.requests] == [500, 200]


async def test_apprise_retry_rides_over_failures() -> None:
    """?retry=2 makes apprise try three times; each attempt is recorded."""
    async with HttpSink() as http:
        http.fail_next(2, status=502)
        result = await notify_one(http.json_url("hook", params={"retry": "2", "wait": "0.01"}))

        assert result.status is AppriseResultStatus.SUCCESS
        (service,) = result.results
        assert [a.status for a in service.attempts] == [
            AppriseResultStatus.FAILURE,
            AppriseResultStatus.FAILURE,
            AppriseResultStatus.SUCCESS,
        ]
        assert len(http.requests) == 3


async def test_slow_http_answer_times_out() -> None:
    """A call timeout shorter than the sink's delay reports TIMEOUT."""
    async with HttpSink(delay=5.0) as http:
        result = await notify_one(http.json_url("slow"), timeout=0.2)

        assert result.status is AppriseResultStatus.TIMEOUT
        assert "did not finish" in log_text(result)
    # stop() cut the 5 s answer short; the test takes well under a second.


async def test_smtp_down_fails_then_delivers_after_restart_on_same_port() -> None:
    """Stopped SmtpSink fails the send; restarted on the same port it delivers."""
    smtp = SmtpSink()
    port = smtp.port
    url = smtp.url_for("duty@example.gov.cn")

    with apprise.LogCapture(level=logging.DEBUG):  # also lets DEBUG records exist
        down = await notify_one(url, log_level=logging.DEBUG)
    assert down.status is AppriseResultStatus.FAILURE
    assert "Connection refused" in log_text(down)

    async with smtp:
        assert smtp.port == port
        up = await notify_one(url)
        assert up.status is AppriseResultStatus.SUCCESS
        await smtp.wait_for(1)

    # The plain start()/stop() pair does the same, many times over.
    smtp.start()
    try:
        smtp.stop()
        assert not await notify_one(url)
        smtp.start()
        assert await notify_one(url)
        assert len(await smtp.wait_for(2)) == 2
    finally:
        smtp.stop()


async def test_smtp_refusal_is_a_failure() -> None:
    """A refused DATA command is a FAILURE for that recipient."""
    async with SmtpSink() as smtp:
        smtp.fail_next(1, reply="554 5.7.1 Rejected")
        refused = await notify_one(smtp.url_for("duty@example.gov.cn"))
        accepted = await notify_one(smtp.url_for("duty@example.gov.cn"))

        assert refused.status is AppriseResultStatus.FAILURE
        assert 'Sending email to "duty@example.gov.cn" failed.' in log_text(refused)
        assert accepted
        assert len(smtp.messages) == 1


async def test_result_url_masks_secrets() -> None:
    """NotifyResult.url hides the password that still reaches the server."""
    async with HttpSink() as http:
        url = f"json://bot:s3cr3t-pw@127.0.0.1:{http.port}/auth"
        result = await notify_one(url)

        assert result
        assert "s3cr3t-pw" not in result.results[0].url
        (request,) = await http.wait_for(1)
        expected = base64.b64encode(b"bot:s3cr3t-pw").decode()
        assert request.headers["Authorization"] == f"Basic {expected}"


async def test_sync_notify_works_from_a_thread() -> None:
    """Blocking Apprise.notify works through asyncio.to_thread."""
    async with HttpSink() as http:
        ap = apprise.Apprise(http.json_url("sync"))
        result = await asyncio.to_thread(ap.notify, body=BODY, title=TITLE)

        assert result.status is AppriseResultStatus.SUCCESS
        assert (await http.wait_for(1))[0].json["message"] == BODY


async def test_wait_for_times_out() -> None:
    """wait_for raises TimeoutError when too few requests arrive."""
    async with HttpSink() as http:
        with pytest.raises(TimeoutError):
            await http.wait_for(1, timeout=0.05)
