"""One log line per request: what was asked, by whom, from where, the answer and how long.

Every answer carries ``X-Request-Id``, and the log line the same id: an integrator reporting
"my call at 03:12 was refused" gives the id, and the administrator finds the line.  A client
may send its own id (its correlation id, a plain token of up to 64 characters); anything else
is replaced by one made here.

What is never written: a bearer token, a password, a session cookie, a request body, or an
acknowledgement link's token (it is in the path: ``/ack/…`` is logged instead).  Refusals of
who-you-are and what-you-may (401, 403) are warnings, so a scan for someone trying tokens
stands out; 5xx answers are errors (the exception itself is logged where it was caught).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import secrets
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from responder.auth import TOKEN_PREFIX
from responder.web.identity import IDENTITY
from responder.web.keys import CFG, request_key
from responder.web.security import client_address

log = logging.getLogger("responder.access")
REQUEST_ID = request_key("request_id", str)
HEADER = "X-Request-Id"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_API_TOKEN = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_%-]+")
CLIENT_CLOSED = 499  # the client went away before the answer (nginx's number for it)
# The request being answered, for every line logged while answering it (ops' "incident
# declared …"): see RequestIdFilter.
CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def request_id(request: web.Request) -> str:
    """This request's id (made on first use, for code running outside the middleware)."""
    rid = request.get(REQUEST_ID)
    if rid is None:
        given = request.headers.get(HEADER, "")
        rid = given if _CLIENT_ID.fullmatch(given) else secrets.token_hex(8)
        request[REQUEST_ID] = rid
    return str(rid)


def logged_path(request: web.Request) -> str:
    """The path as it may be written down: as sent, still percent-encoded (decoded, a ``%0A``
    would start a forged log line); an acknowledgement token is a secret, and so is an API
    token a client put in the address by mistake (``?token=rsp_…``)."""
    if request.path.startswith("/ack/"):
        return "/ack/…"
    return _API_TOKEN.sub(TOKEN_PREFIX + "…", request.rel_url.raw_path_qs)


@web.middleware
async def access_log(request: web.Request, handler: Any) -> web.StreamResponse:
    rid = request_id(request)
    current = CURRENT.set(rid)
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers[HEADER] = rid
        return response
    except web.HTTPException as e:  # redirects are raised (HTTPSeeOther)
        status = e.status
        e.headers[HEADER] = rid
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        _write(request, rid, status, time.monotonic() - started)
        CURRENT.reset(current)


class RequestIdFilter(logging.Filter):
    """Gives every record the id of the request being answered when it was logged (None for
    the engine's own work), so one id finds all the lines of one request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = None if hasattr(record, "fields") else CURRENT.get()
        return True


class MalformedRequestFilter(logging.Filter):
    """aiohttp answers a request it cannot parse (a header or address over 8190 bytes, a
    broken header) with 400 itself, and logs it as an ERROR with a traceback and the first 100
    bytes of the offending line — which can be a session cookie (a browser with many cookies on
    the domain) or a token.  A body it cannot decode (broken gzip or chunks) is logged the same
    way when aiohttp drains it after the answer.  Both are the client's mistake: one warning
    line, without what was sent.  (Attached to ``aiohttp.server``.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError) and exc.__cause__ is not None:
            exc = exc.__cause__  # what was wrong with the body
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            record.msg = "malformed HTTP request from %s (%s)"
            given = record.args if isinstance(record.args, tuple) else ()
            record.args = (given[0] if given else "a client", type(exc).__name__)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def _write(request: web.Request, rid: str, status: int, elapsed: float) -> None:
    level = (
        logging.ERROR
        if status >= 500
        else logging.WARNING
        if status in (401, 403)
        else logging.INFO
    )
    if not log.isEnabledFor(level):  # a log kept at WARNING (the benchmarks): build nothing
        return
    user = request.get(IDENTITY)
    fields = {
        "method": request.method,
        "path": logged_path(request),
        "status": status,
        "duration_ms": round(elapsed * 1000, 1),
        "user": user["username"] if user else None,
        "client": client_address(request, request.app[CFG].service.trusted_proxies),
        "request_id": rid,
    }
    log.log(
        level,
        "%s %s %s %.1f ms user=%s client=%s id=%s",
        fields["method"],
        fields["path"],
        status,
        fields["duration_ms"],
        fields["user"] or "-",
        fields["client"],
        rid,
        extra={"fields": fields},
    )
