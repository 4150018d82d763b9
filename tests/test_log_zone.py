"""Log lines say which time zone their time is in: the host's clock (often UTC in a container)
beside the +08:00 of every page and message was read as local time."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from responder.web.server import JsonFormatter, TextFormatter

# 2026-11-27 06:03:01.234 UTC: 14:03:01.234 in Shanghai.
AT = datetime(2026, 11, 27, 6, 3, 1, 234000, tzinfo=UTC)


@pytest.fixture
def host_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's zone set to Asia/Shanghai for the test (and back after it)."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def record() -> logging.LogRecord:
    rec = logging.LogRecord("responder.test", logging.INFO, __file__, 1, "serving", (), None)
    rec.created = AT.timestamp()
    rec.msecs = 234.0
    return rec


@pytest.mark.usefixtures("host_zone")
def test_a_text_log_line_carries_its_offset() -> None:
    line = TextFormatter().format(record())
    assert line == "2026-11-27T14:03:01.234+08:00 INFO responder.test: serving"
    stamp = datetime.fromisoformat(line.split(" ", 1)[0])
    assert stamp == AT  # the same instant, whatever zone the reader is in


@pytest.mark.usefixtures("host_zone")
def test_a_json_log_line_carries_its_offset() -> None:
    entry = json.loads(JsonFormatter().format(record()))
    stamp = datetime.fromisoformat(entry["time"])
    assert stamp.utcoffset() is not None and stamp == AT
