"""The development inbox: the example config's channels post here (json://…/dev/inbox/sms),
so a new user sees exactly what each recipient would receive without any gateway account.

Only mounted when ``service.dev_inbox = true``; it keeps the last 500 messages in memory and
shows them at ``/dev/inbox`` — to this machine, or to anyone signed in: the messages carry
contacts and live acknowledgement links, and a demo started with ``--host 0.0.0.0`` (the
Docker image) must not show them to whoever reaches the port.  Never enable it in production.

"This machine" is the client as the rest of the service sees it
(:func:`~responder.web.security.client_address`), not the socket's peer: behind a reverse
proxy on the same host every request comes from 127.0.0.1.
"""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from responder.errors import ResponderError
from responder.web.identity import identify
from responder.web.keys import CFG
from responder.web.layout import page_language, render_page
from responder.web.security import client_address, is_trusted_proxy

INBOX = web.AppKey("dev_inbox", deque)
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
# Headers a reverse proxy adds to say for whom it forwards.
FORWARDED = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


class InboxClosed(ResponderError):
    status = 403


def _loopback(address: str) -> bool:
    return address in LOOPBACK


def from_this_machine(request: web.Request) -> bool:
    """Whether the request comes from this machine itself.

    A forwarded request counts only when the proxy is one of ``service.trusted_proxies`` and
    the client its X-Forwarded-For names is this machine: a proxy on this host that is not
    listed connects from 127.0.0.1, yet forwards for anyone."""
    proxies = request.app[CFG].service.trusted_proxies
    if any(name in request.headers for name in FORWARDED):
        if "X-Forwarded-For" not in request.headers:
            return False  # forwarded, for a client that cannot be named
        if not is_trusted_proxy(request.remote, proxies):
            return False
        return _loopback(client_address(request, proxies))
    return _loopback(request.remote or "")


async def receive(request: web.Request) -> web.Response:
    if not from_this_machine(request):
        raise web.HTTPForbidden()
    raw = await request.read()
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = {"message": raw.decode("utf-8", "replace")}
    if not isinstance(payload, dict):
        payload = {"message": str(payload)}
    request.app[INBOX].appendleft(
        {
            "at": datetime.now(UTC).astimezone(request.app[CFG].tz).strftime("%Y-%m-%d %H:%M:%S"),
            "channel": request.match_info["channel"][:20],
            "to": str(payload.get("to", ""))[:100],
            "title": str(payload.get("title", ""))[:300],
            "message": str(payload.get("message", ""))[:5000],
        }
    )
    return web.json_response({"ok": True})


async def show(request: web.Request) -> web.Response:
    if not from_this_machine(request) and await identify(request) is None:
        raise InboxClosed(
            "dev_inbox_closed",
            "开发收件箱只对本机开放;从其他电脑查看请先登录",
            "the development inbox is open to this machine only; sign in to see it from another",
        )
    if request.query.get("format") == "json":
        return web.json_response(
            list(request.app[INBOX]), dumps=lambda o: json.dumps(o, ensure_ascii=False)
        )
    return render_page(
        "inbox.html", {"messages": list(request.app[INBOX]), "lang": page_language(request)}
    )


def setup(app: web.Application) -> None:
    app[INBOX] = deque(maxlen=500)
    app.router.add_post("/dev/inbox/{channel}", receive)
    app.router.add_get("/dev/inbox", show)


def messages(app: web.Application) -> list[dict[str, Any]]:
    return list(app[INBOX])
