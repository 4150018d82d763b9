"""What a failed send means, in words a duty officer understands: Chinese first, English too.

An attempt records the technical error: apprise's own words (scrubbed of secrets), or one of the
sentences below that this service writes itself.  :func:`explain` turns it into a sentence for
people, shown beside it in the API (``error_message`` / ``error_message_en``); the technical
text stays for whoever fixes the channel.
"""

from __future__ import annotations

# Written by the service itself (the only places these words are made):
INTERRUPTED = "interrupted: the service stopped during this send"
SENDER_DIED = "the sending process stopped during this send"
SENDER_STOPPED = "the sending process was stopped"
URL_NOT_UNDERSTOOD = "channel URL not understood by apprise"
NOT_BUILT = "message not built: "  # followed by the exception

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
_NOT_BUILT = (
    "消息未能生成(模板或联系方式有误),请管理员检查配置",
    "the message could not be made (template or contact details): an administrator must check",
)
_GATEWAY = (
    "网关未接受或无法连接(技术原因见 error),按设定重试或改用此人的下一渠道",
    "the gateway refused the message or could not be reached (see error); it is retried or"
    " the person's next channel is tried",
)


def explain(error: str | None) -> tuple[str, str] | tuple[None, None]:
    """(Chinese, English) for a recorded send error; (None, None) when there was none."""
    if not error:
        return None, None
    if error in _OURS:
        return _OURS[error]
    if error.startswith(NOT_BUILT):
        return _NOT_BUILT
    return _GATEWAY  # anything else is apprise reporting what the gateway or network did
