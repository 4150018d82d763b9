"""One message through apprise to one URL, with the outcome and a scrubbed error.

apprise plugins are synchronous; the sending process runs :func:`send` in a thread of its
own, and the dispatcher waits for it to *finish* (it never retries beside a running send: a
timed-out send may still complete in its thread, and a retry on the same channel would deliver
the message twice; see :mod:`.sending_process` for the one send that is given up on).

Errors and URLs are scrubbed before they leave this module: passwords, tokens and query values
of the channel URL are replaced by ``****``, so nothing secret reaches the database, the logs,
the pages or the API.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import apprise
from apprise.manager_plugins import NotificationManager

from responder.engine.failures import URL_NOT_UNDERSTOOD

# apprise's log records are captured per call into AppriseResult (which needs them created at
# WARNING); they are kept from our log handlers, which get the scrubbed error instead.
_apprise_log = logging.getLogger("apprise")
_apprise_log.setLevel(logging.WARNING)
_apprise_log.propagate = False
_apprise_log.addHandler(logging.NullHandler())
# urllib3 (under apprise's HTTP plugins) logs every request line at DEBUG, query string and all:
# a gateway token passed as a URL parameter would reach the logs of a service run at DEBUG.
_urllib3_log = logging.getLogger("urllib3")
_urllib3_log.setLevel(logging.WARNING)
_urllib3_log.propagate = False
_urllib3_log.addHandler(logging.NullHandler())

FORMATS = {"chat": apprise.NotifyFormat.MARKDOWN}
# Chat robots that show plain text only: apprise's WeCom robot posts msgtype "text", and our chat
# markdown would reach the recipient as "####", "**" and "[确认收到](https://…)".
TEXT_ONLY_CHAT = {"wecombot"}
# apprise 2.x gives up waiting for a service after ``service_timeout`` (60 s by default) and
# reports a failure while the send goes on in its thread pool: a retry beside it would deliver
# the message twice.  0 turns that off, and without async_mode a single URL is sent in the
# calling thread (no hop through apprise's pool).  Each plugin's own socket timeouts still
# bound every request.
ASSET = apprise.AppriseAsset(service_timeout=0, async_mode=False)
_HEADER_SCHEMES = {"json", "jsons", "form", "forms", "xml", "xmls"}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    error: str = ""
    seconds: float = 0.0
    # False when a retry on the same channel could deliver the message twice (a send given up
    # on while the gateway may still be taking it): the next channel is tried instead.
    same_channel_again: bool = True


def secrets_in(url: str) -> list[str]:
    """The parts of a channel URL that may be secret: credentials, tokens, query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    out = [parts.password or "", parts.username or ""]
    out += [unquote(seg) for seg in parts.path.split("/") if len(seg) >= 8]
    out += [v for _, v in parse_qsl(parts.query) if len(v) >= 4]
    if "@" in parts.netloc:
        out.append(parts.netloc.split("@", 1)[0])
    return sorted({s for s in out if s}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    for s in secrets_in(url):
        text = text.replace(s, "****").replace(quote(s, safe=""), "****")
    return text


def with_idempotency_key(url: str, key: str) -> str:
    """HTTP gateways get ``X-Responder-Notification``: a retry after a crash carries the same
    key, so a gateway that honours it drops the duplicate."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _HEADER_SCHEMES:
        return url
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}+X-Responder-Notification={quote(key)}"


def with_read_timeout(url: str, seconds: float) -> str:
    """apprise waits 4 s for a gateway's answer (``rto``), then reports a failure — though the
    gateway may be taking the message all the same.  Retried on the same channel, a gateway
    slower than that got every message twice.  Waiting up to ``seconds`` (a little beyond
    ``alerts.send_timeout``) leaves a slow answer to the send timeout, which moves on to the
    next channel instead.  A URL that sets its own ``rto`` keeps it.

    Not for the development inbox: that is this service itself, which answers at once — or,
    while it is stopping, never (its server no longer serves the requests it accepted), and
    its own stop would then wait the full read timeout for every send in flight."""
    if re.search(r"[?&]rto=", url) or "/dev/inbox/" in url:
        return url
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}rto={int(seconds)}"


def as_text(markdown: str) -> str:
    """A chat message's markdown as plain text: headings, quotes and bold unmarked, the link
    written out.  (Free text in it has no markdown: the templates make its brackets full-width.)"""
    text = re.sub(r"^(?:#{1,6}|>) ?", "", markdown, flags=re.MULTILINE).replace("**", "")
    return re.sub(r"\[([^\]\n]*)\]\((\S+?)\)", r"\1: \2", text)


# One address per kind of plugin the example channels use: building each imports what its first
# real send would (the HTTP and mail libraries' lazily loaded parts).  Nothing is sent to them.
_WARM_UP_URLS = (
    "json://127.0.0.1/",
    "form://127.0.0.1/",
    "mailtos://user:pass@127.0.0.1/?to=a@example.gov.cn",
)


def warm_up() -> tuple[int, float]:
    """Do now what the first message would otherwise pay for: apprise loads all its plugins on
    its first ``add()`` (~150 ms on a quiet machine, ~450–750 ms on a busy one), and the first
    HTTP post sets up what later ones reuse (~10–20 ms more; in a process just forked, much of
    it is the copying of the memory pages a send touches).  Run in the fork server, then again
    in each child (there, the plugins are loaded already).  Returns (plugins loaded,
    milliseconds it took)."""
    started = time.monotonic()
    for url in _WARM_UP_URLS:
        apprise.Apprise.instantiate(url, asset=ASSET)
    _post_to_ourselves()
    return len(NotificationManager()), (time.monotonic() - started) * 1000


def _post_to_ourselves() -> None:
    """One json:// post through apprise, shaped like a real alert (a payload field, the
    notification header, a read timeout, Chinese text), to a throwaway server on 127.0.0.1
    answered by a thread that is gone when this returns (it may run in the fork server,
    before a fork)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(5)
        answering = threading.Thread(target=_answer_once, args=(server,), daemon=True)
        answering.start()
        url = f"json://127.0.0.1:{server.getsockname()[1]}/warm-up?:to=warm-up&rto=5"
        send(with_idempotency_key(url, "warm-up"), "预热 warm-up", "预热 warm-up", "sms")
        answering.join(5)


def _answer_once(server: socket.socket) -> None:
    with contextlib.suppress(OSError), server.accept()[0] as conn:
        conn.settimeout(5)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(65536)
            if not chunk:
                return
            request += chunk
        head, _, body = request.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while length and len(body) < int(length.group(1)):
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}"
        )


def send(url: str, title: str, body: str, channel_kind: str) -> Outcome:
    """Send synchronously (run it in a thread).  Never raises for a delivery problem."""
    started = time.monotonic()
    body_format = FORMATS.get(channel_kind, apprise.NotifyFormat.TEXT)
    if body_format == apprise.NotifyFormat.MARKDOWN and url.split("://")[0] in TEXT_ONLY_CHAT:
        body, body_format = as_text(body), apprise.NotifyFormat.TEXT
    try:
        ap = apprise.Apprise(asset=ASSET)
        if not ap.add(url):
            return Outcome(False, URL_NOT_UNDERSTOOD, time.monotonic() - started)
        result = ap.notify(body=body, title=title, body_format=body_format)
    except Exception as e:  # a plugin bug must not take the dispatcher down
        return Outcome(False, scrub(f"{type(e).__name__}: {e}", url), time.monotonic() - started)
    elapsed = time.monotonic() - started
    if result.status == apprise.AppriseResultStatus.SUCCESS:
        return Outcome(True, "", elapsed)
    messages = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
    error = "; ".join(dict.fromkeys(messages)) or f"apprise status {result.status.name}"
    return Outcome(False, scrub(error, url)[:500], elapsed)
