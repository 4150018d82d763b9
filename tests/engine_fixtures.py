"""Fixtures shared by the alert engine's tests (``pytest_plugins = ["tests.engine_fixtures"]``).

* ``http_sink`` / ``smtp_sink`` — the real receivers of :mod:`tests.sinks` on 127.0.0.1.
* ``wired`` — the example config with every channel pointed at those sinks.
* ``engine`` — an :class:`~responder.engine.runner.Engine` on ``db``, ``wired`` and the FakeClock,
  started for the test and stopped after it.

Plain helpers (``settle``, ``SECRET``, ``wire`` …) live in :mod:`tests.engine_helpers`, so that a
test module can import them without importing this plugin before pytest rewrites its asserts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from responder.clock import FakeClock
from responder.config import Config
from responder.engine.runner import Engine
from responder.store import Database
from tests.engine_helpers import SECRET, wire
from tests.sinks import HttpSink, SmtpSink


@pytest.fixture
async def http_sink() -> AsyncIterator[HttpSink]:
    async with HttpSink() as sink:
        yield sink


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def wired(cfg: Config, http_sink: HttpSink, smtp_sink: SmtpSink) -> Config:
    """The example config with its channels pointed at the sinks."""
    return wire(cfg, http_sink.port, smtp_sink.port)


@pytest.fixture
async def engine(db: Database, wired: Config, clock: FakeClock) -> AsyncIterator[Engine]:
    eng = Engine(db, wired, clock, SECRET)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()
