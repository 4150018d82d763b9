"""``/healthz`` while alerts fail on every channel (issue 14, finding 1): it said ``ok`` while a
person's alert and the administrators' alerts failed, and only ``/metrics`` and one ERROR line
showed it.  Now it says ``degraded`` — who is not being reached, on which channels, and when
the next try is, in Chinese and English — and, once they are reached again, when.

A live app on 127.0.0.1 with its engine on the FakeClock; every channel a json:// post to a
real HTTP gateway on 127.0.0.1 that answers 500 until it is healed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from responder.config import Config
from responder.web.keys import ENGINE
from tests.engine_helpers import settle
from tests.sinks import HttpSink
from tests.web_helpers import Web

pytest_plugins = ["tests.web_fixtures"]


@pytest.fixture
async def gateway() -> AsyncIterator[HttpSink]:
    async with HttpSink() as sink:
        yield sink


@pytest.fixture
def web_cfg(cfg: Config, gateway: HttpSink) -> Config:
    """Every channel posts to ``gateway``; one try per channel, so a round is quick."""
    cfg.channels = {
        name: f"json://127.0.0.1:{gateway.port}/{name}?:to={{id}}" for name in cfg.channels
    }
    cfg.alerts.attempts_per_channel = 1
    return cfg


@pytest.mark.parametrize("run_engine", [True])
async def test_healthz_is_degraded_while_alerts_fail_and_says_when_they_recover(
    web: Web, gateway: HttpSink
) -> None:
    engine = web.app[ENGINE]
    gateway.fail_next(100_000)  # every gateway answers 500
    await web.declare(occurred_at=web.at(minutes=-5))
    await settle(engine)

    resp = await web.client.get("/healthz")
    data = await resp.json()
    assert resp.status == 200, data  # the service works: a restart would not help
    assert data["status"] == "degraded" and data["problems"] == []
    [wang] = [d for d in data["degraded"] if "(wang-fang)" in d]
    # One: the notice of both duties (release, press conference) is one message, not delivered.
    assert wang.startswith("1 alert(s) to 王芳 (wang-fang) failed on every channel (sms, voice,")
    assert "trying again, next at 2026-11-26 " in wang
    [wang_zh] = [d for d in data["degraded_zh"] if "(wang-fang)" in d]
    assert wang_zh.startswith("发给王芳(wang-fang)的 1 条提醒在所有渠道(sms、voice、email)均未送达")
    failing = {f["person"]: f for f in data["alerts"]["failing"]}
    assert failing["wang-fang"]["channels"] == ["sms", "voice", "email"]
    assert failing["wang-fang"]["administrator"] is False
    # The administrator, told on each channel of each failed alert, is not reached either.
    people = await web.count(
        "notifications", "kind != 'watchdog' AND status = 'failed' AND carried_by IS NULL"
    )
    assert failing["admin-liu"] == {
        "person": "admin-liu",
        "person_name": "刘洋",
        "administrator": True,
        "channels": ["email", "sms"],
        "alerts": 2 * people,
        "next_try_at": failing["admin-liu"]["next_try_at"],
    }
    assert data["alerts"]["recovered_at"] is None
    # No contact details: this answer needs no credentials.
    assert "+86" not in str(data) and "@example" not in str(data)
    metrics = await (await web.get("/metrics")).text()
    assert f"responder_alerts_failing {sum(f['alerts'] for f in failing.values())}" in metrics

    # The gateways work again: the next round reaches everyone, and /healthz says when.
    gateway.heal()
    nxt = await engine.dispatcher.next_due()
    assert nxt is not None
    web.clock.set(nxt)
    await settle(engine)
    resp = await web.client.get("/healthz")
    data = await resp.json()
    assert resp.status == 200 and data["status"] == "ok", data
    assert data["degraded"] == [] and data["alerts"]["failing"] == []
    assert data["alerts"]["recovered_at"] == web.clock.now().astimezone(web.cfg.tz).isoformat()
