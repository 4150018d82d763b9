"""Times as people read them, in any configured zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from responder.errors import BadInput
from responder.timeutil import format_duration, next_whole_second, parse_time, show, zone


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("Asia/Shanghai", "2026-11-26 13:00 +08:00"),
        ("America/New_York", "2026-11-26 00:00 -05:00"),
        ("Asia/Kolkata", "2026-11-26 10:30 +05:30"),
        ("UTC", "2026-11-26 05:00 +00:00"),
    ],
)
def test_show_writes_the_offset_the_rfc_3339_way(tz: str, expected: str) -> None:
    assert show(datetime(2026, 11, 26, 5, tzinfo=UTC), zone(tz)) == expected


def test_parse_time_keeps_the_instant_and_refuses_what_it_cannot_place() -> None:
    assert parse_time("2026-11-26T13:00:00+08:00") == datetime(2026, 11, 26, 5, tzinfo=UTC)
    assert parse_time("2026-11-26T05:00:00Z") == datetime(2026, 11, 26, 5, tzinfo=UTC)
    for text, code in (
        ("2026-11-26T13:00:00", "naive_time"),
        ("yesterday", "bad_time"),
        ("2026-11-26T13:00:00 08:00", "bad_time"),  # the "+" lost in a URL: told so
        ("0001-01-01T00:00:00+14:00", "time_out_of_range"),
        ("3000-01-01T00:00:00Z", "time_out_of_range"),
    ):
        with pytest.raises(BadInput) as e:
            parse_time(text, "occurred_at")
        assert e.value.code == code and "occurred_at" in e.value.zh


def test_durations_read_as_a_duty_officer_says_them() -> None:
    assert format_duration(timedelta(hours=24)) == "24小时"
    assert format_duration(timedelta(hours=4, minutes=59)) == "4小时59分钟"
    assert format_duration(timedelta(hours=1, minutes=30), "en") == "1 h 30 min"
    assert format_duration(timedelta(days=20), "en") == "20 d"


def test_next_whole_second_rounds_up_and_keeps_whole_seconds() -> None:
    t = datetime(2026, 11, 26, 23, 59, 59, 333949, tzinfo=UTC)
    assert next_whole_second(t) == datetime(2026, 11, 27, 0, 0, 0, tzinfo=UTC)
    whole = datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC)
    assert next_whole_second(whole) == whole
