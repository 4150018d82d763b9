"""What a failed send means, in words a duty officer understands: Chinese first, English too.

An attempt records the technical error: apprise's own words (scrubbed of secrets), or one of the
sentences below that this service writes itself.  :func:`explain` turns it into a sentence for
people, shown beside it in the API (``error_message`` / ``error_message_en``); the technical
text stays for whoever fixes the channel.

apprise's words are sorted by what someone can do about them: the gateway failed (HTTP 5xx:
wait), refused our credentials (401/403) or the request (other 4xx: an administrator fixes the
channel), limited the rate (429), could not be reached (the network or the address), or, for
mail, refused the message or the login.  Words not recognised get the general meaning.
"""

from __future__ import annotations

import re

# Written by the service itself (the only places these words are made):
INTERRUPTED = "interrupted: the service stopped during this send"
SENDER_DIED = "the sending process stopped during this send"
SENDER_STOPPED = "the sending process was stopped"
SENDER_NOT_READY = "the sending process cannot send: "  # followed by why (see sending_process)
URL_NOT_UNDERSTOOD = "channel URL not understood by apprise"
SEND_TIMED_OUT = "the gateway did not finish answering within "  # followed by the time
NOT_BUILT = "message not built: "  # followed by the exception
# Why a message could not be built, when the configuration changed while it waited (after NOT_BUILT):
PERSON_GONE = "the person is no longer in the configuration"
CHANNEL_GONE = "the channel is no longer in the configuration"

_OURS = {
    INTERRUPTED: (
        "发送过程中服务停止,无法确认是否送达,已重新发送",
        "the service stopped during this send; whether it arrived is unknown, so it was sent again",
    ),
    SENDER_DIED: (
        "发送进程意外中断,已按设定重试",
        "the sending process stopped unexpectedly; the message is retried",
    ),
    SENDER_STOPPED: (
        "服务停止时发送被中断,已按设定重试",
        "the send was cut short by the service stopping; the message is retried",
    ),
    URL_NOT_UNDERSTOOD: (
        "渠道地址无法识别,请管理员检查渠道配置",
        "the channel address is not understood: an administrator must check the channel settings",
    ),
}
_GONE = {
    PERSON_GONE: (
        "收件人已从配置中删除,消息无法发出;如仍需通知,请管理员改派他人",
        "the person was removed from the configuration, so the message cannot go out;"
        " an administrator must tell someone else if it still matters",
    ),
    CHANNEL_GONE: (
        "该渠道已从配置中删除;改用此人的下一渠道",
        "the channel was removed from the configuration; the person's next channel is tried",
    ),
}
_TIMED_OUT = (
    "网关在限定时间内没有答完,消息可能已送达也可能没有;为免重复,不再经此渠道重发,改用此人的下一渠道",
    "the gateway did not finish answering in time; the message may or may not have arrived, so"
    " it is not sent this way again: the person's next channel is tried",
)
_NOT_READY = (
    "本服务的发送进程无法启动,消息未发出;已按设定重试,请管理员查看 /healthz 与服务日志",
    "the service's sending process could not start, so nothing was sent; the message is"
    " retried: an administrator must check /healthz and the service's log",
)
_NOT_BUILT = (
    "消息未能生成(模板或联系方式有误),请管理员检查配置",
    "the message could not be made (template or contact details): an administrator must check",
)
# What follows each explanation of a gateway's failure: what the service does about it.
_THEN = ("按设定重试或改用此人的下一渠道", "it is retried or the person's next channel is tried")
_GATEWAY = (
    "网关未接受或无法连接(技术原因见 error)",
    "the gateway refused the message or could not be reached (see error)",
)
# apprise's plugins word their failures alike: an HTTP gateway's answer ends "error=<status>."
# (custom JSON and form, DingTalk, WeCom bot, Feishu, …), a network failure is "A Connection
# error occurred …", the mail plugin's are its own.  Matched in this order; the first wins.
_HTTP_STATUS = re.compile(r"error=(\d{3})\b")
_REJECTED = (
    "网关收到了请求但拒绝了这条消息(原因代码见 error)",
    "the gateway took the request but refused the message (its code is in error)",
)
_APPRISE = (
    (
        # smtplib's errors, login refused included, all end up as this one line.
        re.compile(r"connection error while submitting email", re.I),
        "连不上邮件服务器或登录被拒(网络、地址、账号或密码有误)",
        "the mail server could not be reached or refused the login (network, address,"
        " account or password)",
    ),
    (
        re.compile(r"connection error occur", re.I),
        "连接不上网关(网络不通、地址有误、对方未运行或超时)",
        "the gateway could not be reached (network down, wrong address, not running, or timed out)",
    ),
    (
        re.compile(r"sending email to .* failed", re.I),
        "邮件服务器拒收了这封邮件(收件地址或发件设置可能有误)",
        "the mail server refused this message (the address or the sender settings may be wrong)",
    ),
    (re.compile(r"rejected our notification", re.I), *_REJECTED),
)


def _by_status(status: int) -> tuple[str, str]:
    if status < 400:  # answered "OK" with an error of its own in the body (DingTalk's errcode)
        return _REJECTED
    if status in (401, 403):
        return (
            f"网关拒绝了本服务的身份(HTTP {status}):请管理员检查渠道的账号、密钥或白名单",
            f"the gateway refused our credentials (HTTP {status}): an administrator must check"
            " the channel's account, key or allow-list",
        )
    if status == 429:
        return ("网关限流(HTTP 429),发得太快", "the gateway is limiting the rate (HTTP 429)")
    if status >= 500:
        return (f"网关出错(HTTP {status})", f"the gateway failed (HTTP {status})")
    return (
        f"网关不接受这个请求(HTTP {status}):请管理员检查渠道地址与参数",
        f"the gateway did not accept the request (HTTP {status}): an administrator must check"
        " the channel address and its parameters",
    )


def _gateway(error: str) -> tuple[str, str]:
    status = _HTTP_STATUS.search(error)
    if status:
        return _by_status(int(status.group(1)))
    for pattern, zh, en in _APPRISE:
        if pattern.search(error):
            return zh, en
    return _GATEWAY


def explain(error: str | None) -> tuple[str, str] | tuple[None, None]:
    """(Chinese, English) for a recorded send error; (None, None) when there was none."""
    if not error:
        return None, None
    if error in _OURS:
        return _OURS[error]
    if error.startswith(SENDER_NOT_READY):
        return _NOT_READY
    if error.startswith(SEND_TIMED_OUT):
        return _TIMED_OUT
    if error.startswith(NOT_BUILT):
        return next((words for why, words in _GONE.items() if why in error), _NOT_BUILT)
    # Anything else is apprise reporting what the gateway or the network did.
    zh, en = _gateway(error)
    return f"{zh};{_THEN[0]}", f"{en}; {_THEN[1]}"
