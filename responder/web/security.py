"""Security headers, login sessions, CSRF tokens and the login rate limit.

Sessions are signed cookies (HMAC-SHA256 with the server secret): user id, expiry and a
CSRF token; HttpOnly, SameSite=Strict, Secure when the public URL is https.  Every form
carries the CSRF token and every page POST checks it.  The sign-in form, shown before there
is a session, carries a login token instead: the signature of a random value kept in its own
SameSite=Strict cookie (see :func:`login_token`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from responder.web.keys import CFG

COOKIE = "responder_session"
SESSION_SECONDS = 12 * 3600
LOGIN_COOKIE = "responder_login"
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
    # aiohttp would name itself and its version: a scanner's first question, answered for free.
    "Server": "responder",
}


# Sent when the public URL is https: browsers then never try the service over plain http
# (a year; not includeSubDomains, which would bind every other site under the same domain).
HSTS = {"Strict-Transport-Security": "max-age=31536000"}


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    headers = HEADERS
    if request.app[CFG].service.public_url.startswith("https://"):
        headers = {**HEADERS, **HSTS}
    try:
        response = await handler(request)
    except web.HTTPException as e:  # redirects are raised (HTTPSeeOther): they get them too
        for name, value in headers.items():
            e.headers.setdefault(name, value)
        raise
    for name, value in headers.items():
        response.headers.setdefault(name, value)
    return response


def _sign(secret: bytes, payload: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(secret, payload, hashlib.sha256).digest()).decode()


def make_session(secret: bytes, user_id: int, now: float | None = None) -> tuple[str, str, str]:
    """A signed session cookie value, its CSRF token and its id (kept in the sessions table,
    so that signing out ends it at once)."""
    csrf = secrets.token_urlsafe(24)
    sid = secrets.token_urlsafe(18)
    body = json.dumps(
        {
            "u": user_id,
            "sid": sid,
            "exp": int((now or time.time()) + SESSION_SECONDS),
            "csrf": csrf,
        },
        separators=(",", ":"),
    ).encode()
    data = base64.urlsafe_b64encode(body).decode()
    return f"{data}.{_sign(secret, ('session:' + data).encode())}", csrf, sid


def read_session(
    secret: bytes, value: str | None, now: float | None = None
) -> dict[str, Any] | None:
    if not value or "." not in value or len(value) > 1000 or not value.isascii():
        return None  # not ours (ours is ASCII); undecodable bytes must not reach .encode()
    data, sig = value.rsplit(".", 1)
    if not hmac.compare_digest(sig, _sign(secret, ("session:" + data).encode())):
        return None
    try:
        session = json.loads(base64.urlsafe_b64decode(data))
    except ValueError:
        return None
    if not isinstance(session, dict) or session.get("exp", 0) < (now or time.time()):
        return None
    return session


def same(given: object, expected: str) -> bool:
    """Whether a value a client sent equals one we computed, in constant time.  What a client
    sends may hold anything — non-ASCII text, bytes that were not UTF-8 — which
    ``hmac.compare_digest`` refuses with an exception: that is simply not the same."""
    return (
        isinstance(given, str)
        and given.isascii()
        and bool(expected)
        and hmac.compare_digest(given, expected)
    )


def is_nonce(value: str | None) -> bool:
    """Whether a login cookie holds a nonce of the form we issue."""
    return bool(value) and _NONCE.fullmatch(value or "") is not None


def login_nonce(value: str | None) -> str:
    """The browser's login nonce (from its ``responder_login`` cookie), or a new one.  Kept
    while the browser has it, so two sign-in tabs open at once both work."""
    return value if value and is_nonce(value) else secrets.token_urlsafe(18)


def login_token(secret: bytes, nonce: str) -> str:
    """The sign-in form's CSRF token for a login nonce.

    Without it a page on another site could sign a duty officer in to an account of the
    attacker's choosing (login CSRF).  Such a page cannot send the SameSite=Strict nonce
    cookie, and cannot compute the token for a nonce without the server secret."""
    return _sign(secret, ("login:" + nonce).encode())


def set_login_cookie(response: web.StreamResponse, nonce: str, secure: bool) -> None:
    # A browser-session cookie (no expiry): a sign-in page left open all night still works.
    response.set_cookie(
        LOGIN_COOKIE, nonce, httponly=True, samesite="Strict", secure=secure, path="/login"
    )


def set_session_cookie(response: web.StreamResponse, value: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="Strict",
        secure=secure,
        path="/",
    )


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(address: str) -> Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def is_trusted_proxy(address: str | None, trusted_proxies: Sequence[Network]) -> bool:
    """Whether ``address`` (a socket's peer) is one of ``service.trusted_proxies``."""
    ip = _ip(address or "")
    return ip is not None and any(ip in net for net in trusted_proxies)


def client_address(request: web.Request, trusted_proxies: Sequence[Network]) -> str:
    """Where a request came from, for the login limit.

    Behind a reverse proxy (where TLS ends when the public URL is https) every request comes
    from the proxy, and one person's wrong passwords would block everyone's login.  When the
    peer is one of ``service.trusted_proxies``, the client is the right-most address in
    X-Forwarded-For that is not itself a trusted proxy.  From any other peer the header is
    ignored: a client cannot choose the address it is counted under.
    """

    peer = request.remote or "-"
    if not is_trusted_proxy(peer, trusted_proxies):
        return peer
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",")]
    for hop in reversed(hops):
        if not is_trusted_proxy(hop, trusted_proxies):
            ip = _ip(hop)
            return str(ip) if ip is not None else peer  # not an address: count it as the proxy
    return peer


class LoginLimiter:
    """Failed logins within ``window`` seconds: at most ``per_client`` from one client address,
    and at most ``per_user`` for one username from all clients together.

    ``per_user`` is the larger on purpose.  One machine stops after a few wrong guesses, so it
    can never lock a duty officer out; a person who mistyped on one machine can still log in
    from another; guessing one account from many machines is still slowed.
    """

    def __init__(self, per_client: int = 5, per_user: int = 20, window: float = 300.0) -> None:
        self.per_client = per_client
        self.per_user = per_user
        self.window = window
        self.failures: dict[str, deque[float]] = defaultdict(deque)
        self._swept = 0.0

    def _limits(self, client: str, username: str) -> list[tuple[str, int]]:
        return [(f"ip:{client}", self.per_client), (f"user:{username}", self.per_user)]

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self.failures.get(key) or deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if q:
            self.failures[key] = q
        else:
            self.failures.pop(key, None)  # forget clients and names with nothing recent
        return q

    def blocked(self, client: str, username: str, now: float | None = None) -> float:
        """Seconds to wait, or 0 when a login may be tried."""
        t = now if now is not None else time.monotonic()
        waits = [
            self.window - (t - q[-limit])
            for key, limit in self._limits(client, username)
            if len(q := self._recent(key, t)) >= limit
        ]
        return max(waits, default=0.0)

    def fail(self, client: str, username: str, now: float | None = None) -> None:
        t = now if now is not None else time.monotonic()
        if t - self._swept > self.window:  # once a window: forget clients and names gone quiet
            for key in list(self.failures):
                self._recent(key, t)
            self._swept = t
        for key, _ in self._limits(client, username):
            q = self._recent(key, t)
            q.append(t)
            self.failures[key] = q
