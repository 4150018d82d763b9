"""Shared fixtures for the HTTP service's tests: a live app on 127.0.0.1, users of every role,
and a helper to declare an incident.

Load it with ``pytest_plugins = ["tests.web_fixtures"]`` at the top of a web test module.

* ``run_engine`` — ``False`` by default (pure API tests); ``@pytest.mark.parametrize(
  "run_engine", [True])`` runs the scheduler, dispatcher and watchdog on the test's FakeClock.
* ``web_cfg`` — the example config with its channels pointed at the app's own development
  inbox on ``web_port``: with the engine running, messages really go out through apprise and
  come back to ``/dev/inbox``.
* ``web`` — a :class:`Web`: the app, an aiohttp ``TestClient`` on a real socket, the database,
  the clock, one API token per role (plus a bad and a revoked one) and helpers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from responder.clock import FakeClock
from responder.config import Config
from responder.web.app import create_app
from responder.web.keys import DB
from tests.sinks import free_port
from tests.web_helpers import SECRET, Web, make_tokens, start


@pytest.fixture
def run_engine() -> bool:
    return False


@pytest.fixture
def web_port() -> int:
    return free_port()


@pytest.fixture
def web_cfg(cfg: Config, web_port: int) -> Config:
    """Channels deliver to the app's own development inbox on ``web_port``."""
    cfg.channels = {
        name: url.replace("127.0.0.1:8080", f"127.0.0.1:{web_port}")
        for name, url in cfg.channels.items()
    }
    cfg.service.dev_inbox = True
    return cfg


@pytest.fixture
async def web(
    web_cfg: Config, clock: FakeClock, web_port: int, run_engine: bool
) -> AsyncIterator[Web]:
    app = create_app(web_cfg, clock=clock, secret=SECRET, run_engine=run_engine)
    client = await start(app, web_port)
    try:
        db = app[DB]
        tokens, ids = await make_tokens(db, clock.now())
        yield Web(app, client, db, web_cfg, clock, web_port, tokens, ids)
    finally:
        await client.close()
