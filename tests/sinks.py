"""Real receivers for tests: a local SMTP server and a local HTTP server.

Nothing here is a mock. ``SmtpSink`` runs an aiosmtpd server in its own
thread; ``HttpSink`` runs an aiohttp server on the test's event loop. Both
listen on 127.0.0.1 and build the apprise URLs that deliver to them.

Note for callers: ``HttpSink`` shares the test's event loop, so deliver to it
with ``await Apprise.async_notify(...)`` or ``await asyncio.to_thread(ap.notify,
...)``; a plain blocking ``ap.notify(...)`` inside the loop would deadlock.
``SmtpSink`` has its own thread and loop, so either style works for it.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, quote

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"
DEFAULT_FROM = "responder@example.gov.cn"
POLL_INTERVAL = 0.01


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _query(params: Sequence[tuple[str, str]]) -> str:
    """Encode ``(key, value)`` pairs; keys keep apprise's ``+``/``-``/``:`` prefix."""
    parts = []
    for key, value in params:
        prefix = key[0] if key[:1] in ("+", "-", ":") else ""
        name = key[len(prefix) :]
        parts.append(f"{prefix}{quote(name, safe='')}={quote(str(value), safe='')}")
    return "&".join(parts)


async def _wait_until(count: Callable[[], int], n: int, limit: float, what: str) -> None:
    """Poll ``count()`` until it reaches ``n``; ``TimeoutError`` after ``limit`` seconds."""
    try:
        async with asyncio.timeout(limit):
            # Polling on purpose: SmtpSink's list grows on the aiosmtpd thread.
            while count() < n:  # noqa: ASYNC110
                await asyncio.sleep(POLL_INTERVAL)
    except TimeoutError:
        raise TimeoutError(f"expected {n} {what} within {limit}s, got {count()}") from None


@dataclass(frozen=True)
class SmtpEnvelope:
    """SMTP envelope of one received message (MAIL FROM / RCPT TO)."""

    mail_from: str
    rcpt_tos: list[str]


class _SmtpHandler:
    """aiosmtpd handler that stores messages on its ``SmtpSink``."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Accept (or refuse, when failing) one message."""
        return self._sink._receive(envelope)


class SmtpSink:
    """A real SMTP server on 127.0.0.1 that keeps what it receives.

    ``stop()`` then ``start()`` reuses the same port, so a test can take the
    mail server down for a while and bring it back.
    """

    def __init__(self, port: int | None = None) -> None:
        """Reserve a port (a free one unless ``port`` is given)."""
        self.port: int = port if port is not None else free_port()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[SmtpEnvelope] = []
        self._fail_replies: list[str] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def running(self) -> bool:
        """Whether the server is currently listening."""
        return self._controller is not None

    def start(self) -> None:
        """Start listening on ``self.port`` (blocks until the server answers)."""
        if self._controller is not None:
            return
        # A Controller closes its loop on stop, so every start needs a new one.
        controller = Controller(
            _SmtpHandler(self),
            hostname=HOST,
            port=self.port,
            server_hostname="sink.test",  # skip the slow socket.getfqdn()
            ready_timeout=5.0,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening; connections to the port are refused until ``start()``."""
        if self._controller is None:
            return
        controller, self._controller = self._controller, None
        controller.stop()

    def fail_next(self, n: int = 1, reply: str = "451 4.3.0 Try again later") -> None:
        """Answer the next ``n`` DATA commands with ``reply`` instead of accepting."""
        with self._lock:
            self._fail_replies.extend([reply] * n)

    def heal(self) -> None:
        """Accept every message from now on (forget the refusals still to come)."""
        with self._lock:
            self._fail_replies.clear()

    def url_for(self, to: str, from_addr: str = DEFAULT_FROM, **params: str) -> str:
        """Apprise URL that mails ``to`` through this server: plain SMTP, no login.

        ``mailto://`` (not ``mailtos://``) with ``mode=insecure`` means no
        STARTTLS and no SSL; having no user/password means no AUTH.
        ``to`` may hold several comma-separated addresses; ``params`` adds
        further query arguments (e.g. ``cc``, ``name``, ``format``).
        """
        query: list[tuple[str, str]] = [("from", from_addr), ("to", to), ("mode", "insecure")]
        query.extend(params.items())
        return f"mailto://{HOST}:{self.port}/?{_query(query)}"

    # ``timeout`` is applied with asyncio.timeout inside _wait_until (hence the noqa).
    async def wait_for(self, n: int, timeout: float = 5.0) -> list[EmailMessage]:  # noqa: ASYNC109
        """Wait until at least ``n`` messages arrived; return all messages."""
        await _wait_until(lambda: len(self.messages), n, timeout, "email(s)")
        return list(self.messages)

    def _receive(self, envelope: Envelope) -> str:
        """Store one message (called on the server thread); return the SMTP reply."""
        with self._lock:
            if self._fail_replies:
                return self._fail_replies.pop(0)
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode()
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.envelopes.append(
                SmtpEnvelope(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos])
            )
            self.messages.append(message)
        return "250 OK"

    def __enter__(self) -> Self:
        """Start the server (sync context manager)."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    async def __aenter__(self) -> Self:
        """Start the server without blocking the event loop."""
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server without blocking the event loop."""
        await asyncio.to_thread(self.stop)


@dataclass
class RecordedRequest:
    """One HTTP request received by ``HttpSink``."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    form: dict[str, str] | None = None
    status: int = 200
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def payload(self) -> dict[str, Any]:
        """The JSON object or form fields, whichever the request carried."""
        if isinstance(self.json, dict):
            return self.json
        return dict(self.form or {})


class HttpSink:
    """A real HTTP server on 127.0.0.1 that records every request.

    Answers ``200`` by default. ``fail_next(n, status)`` makes the next ``n``
    requests get ``status``; ``delay`` (seconds) holds every answer back.
    """

    def __init__(self, port: int | None = None, delay: float = 0.0) -> None:
        """Reserve a port (a free one unless ``port`` is given)."""
        self.port: int = port if port is not None else free_port()
        self.delay: float = delay
        self.requests: list[RecordedRequest] = []
        self._fail_statuses: list[int] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether the server is currently listening."""
        return self._runner is not None

    async def start(self) -> None:
        """Start listening on ``self.port``."""
        if self._runner is not None:
            return
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, self.port).start()
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening; slow (``delay``) answers in flight are cut short."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        self._stopping.set()
        await runner.cleanup()

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status``."""
        self._fail_statuses.extend([status] * n)

    def heal(self) -> None:
        """Answer every request from now on (forget the failures still to come)."""
        self._fail_statuses.clear()

    def base_url(self, schema: str, path: str = "") -> str:
        """``{schema}://127.0.0.1:{port}/{path}`` without a query string."""
        return f"{schema}://{HOST}:{self.port}/{path.lstrip('/')}"

    def json_url(
        self,
        path: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        **extra: str,
    ) -> str:
        """Apprise ``json://`` URL posting here; ``extra`` become payload keys.

        Each ``extra`` item is sent as ``:key=value`` (a new JSON key, or a
        rename -- or with ``""`` a removal -- of a built-in key such as
        ``title``); each ``headers`` item as ``+Header=value``; ``params`` are
        plain apprise arguments (``method``, ``retry``, ``rto``, ``format`` ...).
        """
        return self._apprise_url("json", path, headers, params, extra)

    def form_url(
        self,
        path: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        **extra: str,
    ) -> str:
        """Apprise ``form://`` URL posting here; ``extra`` become form fields."""
        return self._apprise_url("form", path, headers, params, extra)

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:  # noqa: ASYNC109
        """Wait until at least ``n`` requests arrived; return all requests."""
        await _wait_until(lambda: len(self.requests), n, timeout, "request(s)")
        return list(self.requests)

    def _apprise_url(
        self,
        schema: str,
        path: str,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        extra: Mapping[str, str],
    ) -> str:
        """Build a json:// or form:// URL with arguments, headers and payload extras."""
        query: list[tuple[str, str]] = list((params or {}).items())
        query.extend((f"+{k}", v) for k, v in (headers or {}).items())
        query.extend((f":{k}", v) for k, v in extra.items())
        url = self.base_url(schema, path)
        return f"{url}?{_query(query)}" if query else url

    async def _handle(self, request: web.Request) -> web.Response:
        """Record the request, then answer (after ``delay``, maybe failing)."""
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=b"",
        )
        if request.content_type.startswith("multipart/"):
            form: dict[str, str] = {}
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    recorded.files[name] = value.file.read()
                else:
                    form[name] = str(value)
            recorded.form = form
        else:
            recorded.body = await request.read()
            if "json" in request.content_type:
                try:
                    recorded.json = json.loads(recorded.body or b"null")
                except ValueError:
                    recorded.json = None
            elif request.content_type == "application/x-www-form-urlencoded":
                recorded.form = dict(parse_qsl(recorded.body.decode(), keep_blank_values=True))
        if self._fail_statuses:
            recorded.status = self._fail_statuses.pop(0)
        self.requests.append(recorded)

        if self.delay > 0:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.delay)
            except TimeoutError:
                pass
        return web.json_response({"ok": recorded.status < 400}, status=recorded.status)

    async def __aenter__(self) -> Self:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        await self.stop()
