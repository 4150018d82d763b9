"""Helpers shared by the API tests (tests/api/): answers, refusals, and the checks and data
several of them use."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from responder.errors import ResponderError
from tests.web_helpers import assert_error_body

INCIDENTS = "/api/v1/incidents"


async def ok(resp: Any, status: int = 200) -> Any:
    data = await resp.json()
    assert resp.status == status, data
    return data


async def refused(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    data = await resp.json()
    assert resp.status == status, data
    assert_error_body(data)
    if code is not None:
        assert data["error"] == code, data
    return data


def obligation(incident: dict[str, Any], kind: str, seq: int = 1) -> dict[str, Any]:
    matches = [o for o in incident["obligations"] if o["kind"] == kind and o["seq"] == seq]
    assert len(matches) == 1, incident["obligations"]
    return matches[0]


def _error_classes() -> dict[str, int]:
    import responder.web.api  # (BadRequest)
    import responder.web.identity  # noqa: F401  (Unauthorized, Forbidden)

    found, todo = {}, [ResponderError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls.status
        todo += cls.__subclasses__()
    return found


EXTREME_TIMES = [
    "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
    "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
    "0001-01-01T00:00:00Z",
    "1899-12-31T23:59:59Z",
]


def assert_security_headers(headers: Any, what: str) -> None:
    csp = headers.get("Content-Security-Policy", "")
    assert csp, f"{what}: no CSP"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, what
    assert "frame-ancestors 'none'" in csp, what
    assert "script-src 'self'" in csp, what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Referrer-Policy") == "no-referrer", what
    assert headers.get("Server") == "responder", what  # not aiohttp's name and version


INJECTIONS = [
    "'; DROP TABLE incidents; --",
    "<script>alert(1)</script>",
    "{{7*7}}",
    "${jndi:ldap://x/a}",
    "Robert'); DELETE FROM audit_log WHERE ('1'='1",
    "\u200eevil\u200b\ufeff",
]


def _delete_or_replace(path: Path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    else:
        copy = path.with_name("restored.sqlite3")
        shutil.copyfile(path, copy)  # the same bytes, in another file
        copy.replace(path)


_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'


_SAMPLE = re.compile(rf"[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{{{_LABEL}(?:,{_LABEL})*\}})? \S+")


def assert_prometheus_text(body: str) -> None:
    """Every sample line well formed, and every family opened by ``# HELP`` then ``# TYPE``:
    one bad line and Prometheus drops the whole scrape."""
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert i > 0 and lines[i - 1].startswith(f"# HELP {name} "), (name, lines[i - 1])
        elif not line.startswith("# HELP "):
            assert _SAMPLE.fullmatch(line), line
