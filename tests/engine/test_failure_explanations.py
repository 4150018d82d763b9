"""What a failed send means (:mod:`responder.engine.failures`), from apprise's real words.

Each failure is provoked for real — an HTTP sink answering a status, a port nobody listens on,
an SMTP server refusing or gone — sent through :func:`responder.engine.apprise_call.send` (apprise), and
the recorded error is explained.  Only the chat gateways' own error answers (DingTalk's
``errcode`` behind HTTP 200, Feishu's ``code``) cannot be provoked here: their plugins post to
fixed public hosts; those are checked on the plugins' wording.
"""

from __future__ import annotations

import asyncio

import pytest

from responder.engine import failures
from responder.engine.apprise_call import Outcome, send
from tests.sinks import HttpSink, SmtpSink, free_port

THEN = "按设定重试或改用此人的下一渠道"


async def _send(url: str, kind: str = "sms") -> Outcome:
    outcome = await asyncio.to_thread(send, url, "标题", "正文", kind)
    assert not outcome.ok
    return outcome


@pytest.mark.parametrize(
    ("status", "zh", "en"),
    [
        (500, "网关出错(HTTP 500)", "the gateway failed (HTTP 500)"),
        (503, "网关出错(HTTP 503)", "the gateway failed (HTTP 503)"),
        (401, "网关拒绝了本服务的身份(HTTP 401)", "refused our credentials (HTTP 401)"),
        (403, "网关拒绝了本服务的身份(HTTP 403)", "refused our credentials (HTTP 403)"),
        (429, "网关限流(HTTP 429)", "limiting the rate (HTTP 429)"),
        (404, "网关不接受这个请求(HTTP 404)", "did not accept the request (HTTP 404)"),
        (400, "网关不接受这个请求(HTTP 400)", "did not accept the request (HTTP 400)"),
    ],
)
async def test_a_gateway_answering_an_error_status(status: int, zh: str, en: str) -> None:
    async with HttpSink() as sink:
        sink.fail_next(1, status)
        outcome = await _send(sink.json_url("send"))
    assert f"error={status}" in outcome.error  # apprise's words stay the technical detail
    said_zh, said_en = failures.explain(outcome.error)
    assert said_zh is not None and said_en is not None
    assert said_zh.startswith(zh) and said_zh.endswith(THEN)
    assert en in said_en and said_en.endswith("the person's next channel is tried")


@pytest.mark.parametrize("scheme", ["json", "form"])
async def test_a_gateway_nobody_answers(scheme: str) -> None:
    outcome = await _send(f"{scheme}://127.0.0.1:{free_port()}/send")
    zh, en = failures.explain(outcome.error)
    assert zh == f"连接不上网关(网络不通、地址有误、对方未运行或超时);{THEN}"
    assert en is not None and en.startswith("the gateway could not be reached")


async def test_a_mail_server_refusing_the_message() -> None:
    async with SmtpSink() as smtp:
        smtp.fail_next(1, reply="554 5.7.1 Rejected")
        outcome = await _send(smtp.url_for("duty@example.gov.cn"), "email")
    zh, _ = failures.explain(outcome.error)
    assert zh is not None and zh.startswith("邮件服务器拒收了这封邮件")


async def test_a_mail_server_that_is_gone() -> None:
    async with SmtpSink() as smtp:
        url = smtp.url_for("duty@example.gov.cn")
    outcome = await _send(url, "email")  # stopped: nothing listens on its port
    zh, en = failures.explain(outcome.error)
    assert zh is not None and zh.startswith("连不上邮件服务器或登录被拒")
    assert en is not None and en.startswith("the mail server could not be reached")


@pytest.mark.parametrize(
    "error",
    [
        "Failed to send DingTalk notification: error=200.",  # errcode in a 200 answer
        "Feishu rejected our notification: code=19001 msg=param invalid",
    ],
)
def test_a_chat_gateway_refusing_inside_an_ok_answer(error: str) -> None:
    zh, _ = failures.explain(error)
    assert zh == f"网关收到了请求但拒绝了这条消息(原因代码见 error);{THEN}"


def test_words_not_recognised_still_get_the_general_meaning() -> None:
    zh, en = failures.explain("Some plugin said something new")
    assert zh == f"网关未接受或无法连接(技术原因见 error);{THEN}"
    assert en is not None and en.startswith("the gateway refused the message or could not")
