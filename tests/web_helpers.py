"""Helpers for the HTTP service's tests: the :class:`Web` handle on a live app, API callers of
every role, time strings and error-body checks.  The fixtures that build them are in
``tests/web_fixtures.py`` (load it with ``pytest_plugins = ["tests.web_fixtures"]``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application

from responder import auth
from responder.clock import FakeClock
from responder.config import Config
from responder.store import Database
from responder.web.server import HANDLER

SECRET = b"x" * 32
ROLES = ("viewer", "reviewer", "duty_officer", "admin")
# Callers that must get 401: no credentials, a token nobody issued, a revoked token.
UNAUTHENTICATED = ("none", "bad_token", "revoked_token", "expired_token")
PASSWORD = "correct horse battery"
ZONE = "+08:00"
ERROR_KEYS = {"error", "detail", "message", "message_en"}


def rfc3339(t: datetime) -> str:
    """A time as a client sends it: RFC 3339 in +08:00."""
    return t.astimezone(timezone(timedelta(hours=8))).isoformat()


@dataclass
class Web:
    app: Application
    client: TestClient
    db: Database
    cfg: Config
    clock: FakeClock
    port: int
    tokens: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)

    def auth(self, who: str = "admin") -> dict[str, str]:
        """Request headers for a caller: a role, or one of ``UNAUTHENTICATED``."""
        if who == "none":
            return {}
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def at(self, **delta: float) -> str:
        """The clock's now moved by ``delta`` (``hours=-1``), as RFC 3339 in +08:00."""
        return rfc3339(self.clock.now() + timedelta(**delta))

    async def call(
        self,
        method: str,
        path: str,
        who: str = "admin",
        json_body: Any = None,
        **kwargs: Any,
    ) -> ClientResponse:
        headers = {**self.auth(who), **kwargs.pop("headers", {})}
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body, ensure_ascii=False).encode()
            headers.setdefault("Content-Type", "application/json")
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str, who: str = "admin", **kwargs: Any) -> ClientResponse:
        return await self.call("GET", path, who, **kwargs)

    async def post(self, path: str, body: Any, who: str = "admin", **kwargs: Any) -> ClientResponse:
        return await self.call("POST", path, who, json_body=body, **kwargs)

    def declaration(self, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "title": "江城化工园区储罐爆炸",
            "category": "accident",
            "level": "II",
            "occurred_at": self.at(hours=-1),
            "location": "江城区化工园区",
            "summary": "储罐区发生爆炸并起火。",
            "lead_unit": "emergency",
        }
        body.update(fields)
        return body

    async def declare(self, who: str = "admin", **fields: Any) -> dict[str, Any]:
        """Declare an incident through the API; returns the incident as the API answers it."""
        resp = await self.post("/api/v1/incidents", self.declaration(**fields), who)
        data = await resp.json()
        assert resp.status == 201, data
        return data

    async def count(self, table: str, where: str = "1 = 1", params: tuple[Any, ...] = ()) -> int:
        row = await self.db.fetchone(f'SELECT COUNT(*) FROM "{table}" WHERE {where}', params)
        assert row is not None
        return int(row[0])

    async def add_login_user(self, username: str, role: str = "duty_officer") -> int:
        uid = await auth.add_user(self.db, username, role, PASSWORD, self.clock.now(), "test")
        self.user_ids[username] = uid
        return uid

    async def wait_for(self, sql: str, params: tuple[Any, ...] = (), limit: float = 10.0) -> int:
        """Poll until ``sql`` (a COUNT) is non-zero: the engine's sends are real I/O."""
        async with asyncio.timeout(limit):
            while True:
                row = await self.db.fetchone(sql, params)
                if row is not None and row[0]:
                    return int(row[0])
                await asyncio.sleep(0.01)


async def start(app: Application, port: int) -> TestClient:
    """The app on 127.0.0.1:``port``, its request handler set up as ``responder serve`` sets
    it up (no inflating of bodies by aiohttp, no aiohttp access log)."""
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server(**HANDLER)
    client = TestClient(server)
    await client.start_server()
    return client


async def make_tokens(db: Database, now: datetime) -> tuple[dict[str, str], dict[str, int]]:
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    for role in ROLES:
        ids[role] = await auth.add_user(db, f"{role.replace('_', '-')}-1", role, None, now, "test")
        tokens[role], _ = await auth.create_token(
            db, f"{role.replace('_', '-')}-1", "t", now, "test"
        )
    # An admin whose token was revoked: the role would allow everything, the token nothing.
    await auth.add_user(db, "revoked-admin", "admin", None, now, "test")
    tokens["revoked_token"], token_id = await auth.create_token(
        db, "revoked-admin", "old", now, "test"
    )
    await auth.revoke_token(db, token_id, now, "test")
    # An admin whose token was made two days ago to last one day.
    await auth.add_user(db, "expired-admin", "admin", None, now, "test")
    tokens["expired_token"], _ = await auth.create_token(
        db, "expired-admin", "old", now - timedelta(days=2), "test", now - timedelta(days=1)
    )
    tokens["bad_token"] = auth.new_token()  # well formed, never issued
    return tokens, ids


def assert_error_body(data: Mapping[str, Any]) -> None:
    assert ERROR_KEYS <= set(data), data
    assert isinstance(data["error"], str) and data["error"]
    assert isinstance(data["message"], str) and data["message"]
    assert isinstance(data["message_en"], str) and data["message_en"]
