"""/healthz and /metrics.

Time is the FakeClock's (2026-11-26 09:00 +08:00), over a real socket."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from responder.engine import outbox
from responder.web.keys import ENGINE
from tests.api_helpers import (
    _delete_or_replace,
    assert_prometheus_text,
    refused,
)
from tests.web_helpers import SECRET, Web

pytest_plugins = ["tests.web_fixtures"]


async def test_healthz_is_503_when_the_engine_is_not_running(web: Web) -> None:
    resp = await web.client.get("/healthz")
    data = await resp.json()
    assert resp.status == 503, data
    assert data["status"] == "unhealthy" and "engine not running" in data["problems"]
    assert "提醒引擎未在运行,提醒不会发出" in data["problems_zh"]


async def test_healthz_says_how_late_alerts_are(web: Web) -> None:
    """A declaration whose first alerts nobody fires (the engine is stopped here): ten minutes
    later /healthz says how late, in both languages, against alerts.max_lag (2 min)."""
    await web.declare()
    web.clock.advance(timedelta(minutes=10))
    resp = await web.client.get("/healthz")
    data = await resp.json()
    assert resp.status == 503
    assert "alerts are 600 s late (bound 120 s)" in data["problems"]
    assert "提醒已延迟 600 秒(上限 120 秒)" in data["problems_zh"]
    assert data["scheduler_lag_s"] == 600.0


@pytest.mark.parametrize("run_engine", [True])
async def test_healthz_is_200_with_the_engine_then_503_when_stopped(web: Web) -> None:
    resp = await web.client.get("/healthz")
    data = await resp.json()
    assert resp.status == 200, data
    # Ready, or still loading apprise's plugins just after the start.
    assert data["alerts"].pop("sending_process") in ("starting", "ready")
    assert data == {
        "status": "ok",
        "problems": [],
        "problems_zh": [],
        "degraded": [],
        "degraded_zh": [],
        "scheduler_lag_s": 0.0,
        "dispatcher_lag_s": 0.0,
        "alerts": {"failing": [], "recovered_at": None},
    }
    await web.app[ENGINE].stop()
    resp = await web.client.get("/healthz")
    assert resp.status == 503
    assert "engine not running" in (await resp.json())["problems"]


@pytest.mark.parametrize("run_engine", [True])
@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_healthz_is_503_when_the_database_file_is_deleted_or_replaced(
    web: Web, how: str
) -> None:
    """Deleted, or replaced (a backup copied over it), under the running service: the file it
    opened went on answering and taking writes that the next start never sees, and /healthz
    said 200 throughout."""
    assert (await web.client.get("/healthz")).status == 200
    _delete_or_replace(Path(web.cfg.service.database), how)
    if how == "deleted":
        en = "the database file is no longer at its path: changes made now are lost on restart"
        zh = "数据库文件已不在其路径上:此后的更改在重启后会丢失"
    else:
        en = (
            "the database file at its path is not the one this service opened: changes made"
            " now are lost on restart"
        )
        zh = "数据库路径上的文件已不是本服务打开的那个:此后的更改在重启后会丢失"
    resp = await web.client.get("/healthz")
    data = await resp.json()
    assert resp.status == 503, data
    assert (data["status"], data["problems"], data["problems_zh"]) == ("unhealthy", [en], [zh])


async def test_metrics_need_a_token_of_any_role(web: Web) -> None:
    """How many major emergencies are active may not be public before the authoritative
    release; and every scrape counts whole tables."""
    await web.declare()
    for who in ("none", "bad_token", "revoked_token"):
        data = await refused(await web.get("/metrics", who), 401, "unauthorized")
        assert "responder_incidents_active" not in json.dumps(data)
    for who in ("viewer", "reviewer", "duty_officer", "admin"):
        resp = await web.get("/metrics", who)
        assert resp.status == 200, who
        assert 'responder_incidents_active{level="II",drill="false"} 1' in await resp.text()
    health = await web.client.get("/healthz")  # probes need no token, and learn nothing more
    # (alerts: who is not being reached and on which channels, never an incident or a contact)
    assert set(await health.json()) == {
        "status", "problems", "problems_zh", "degraded", "degraded_zh", "scheduler_lag_s",
        "dispatcher_lag_s", "alerts",
    }  # fmt: skip


async def test_metrics_without_sends(web: Web) -> None:
    await web.declare()
    await web.declare(level="IV", drill=True)
    resp = await web.get("/metrics", "viewer")
    assert resp.status == 200 and resp.content_type == "text/plain"
    body = await resp.text()
    assert "# TYPE responder_incidents_active gauge\n" in body
    active = dict(re.findall(r"^responder_incidents_active\{(.*)\} (\d+)$", body, re.M))
    assert len(active) == 8  # every level, drill or not, zeros included
    assert active['level="II",drill="false"'] == "1"
    assert active['level="IV",drill="true"'] == "1"  # an exercise is told apart
    assert sum(map(int, active.values())) == 2
    assert "# TYPE responder_obligations gauge" in body
    assert "# TYPE responder_notifications gauge" in body


async def test_metrics_escape_a_channel_name_holding_a_quote(web: Web) -> None:
    """A channel named ch"at (a quoted TOML key) made the notifications line invalid, and
    Prometheus then rejects every metric of the scrape."""
    channel = 'ch"at\\x\ny'

    def queue_one(tx: sqlite3.Connection) -> int:
        return outbox.queue(
            tx, SECRET, incident_id=None, obligation_id=None, step_id=None, person_id="chen",
            channels=[channel], kind="watchdog", context={}, now=web.clock.now(),
        )  # fmt: skip

    await web.db.transact(queue_one)
    body = await (await web.get("/metrics", "viewer")).text()
    assert 'responder_notifications{channel="ch\\"at\\\\x\\ny",status="queued"} 1\n' in body
    assert "# HELP responder_notifications " in body
    assert_prometheus_text(body)


async def test_healthz_writes_chinese_as_it_is(web: Web) -> None:
    """As the API does: problems_zh read with curl, not as \\uXXXX escapes."""
    resp = await web.client.get("/healthz")
    text = await resp.text()
    assert '"problems_zh": ["提醒引擎未在运行,提醒不会发出"]' in text and "\\u" not in text
