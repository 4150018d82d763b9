"""Time: parse RFC 3339 with an offset, keep UTC, show the configured zone.

Every time inside responder is an aware ``datetime`` in UTC.  Naive times are refused at
the edge with a message a duty officer understands, never guessed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from responder.errors import BadInput

_DURATION = re.compile(r"^\s*(-)?\s*((?:\d+\s*[dhms]\s*)+)$")
_PART = re.compile(r"(\d+)\s*([dhms])")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# "…T03:00:00 08:00": in a URL's query an unencoded "+" is read as a space, so the offset's
# sign is gone.  Not guessed back: the writer is told how to send it.
_PLUS_LOST = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d+)?)? \d{2}:?\d{2}$")


# Times outside these bounds are refused: near datetime's limits a UTC conversion, a deadline
# or the local display overflows, and years before 1000 are not stored in a sortable form.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
OUT_OF_RANGE_ZH = "时间超出可接受的范围(1900—2999 年)"
OUT_OF_RANGE_EN = "the time is out of range (years 1900 to 2999)"


def in_range(v: datetime) -> bool:
    """Whether an aware time lies within [EARLIEST, LATEST)."""
    try:
        return EARLIEST <= v < LATEST
    except OverflowError:
        return False


def from_rfc3339(text: str) -> datetime:
    """The one way text becomes a time: RFC 3339 (``Z`` or an offset; a naive result is the
    caller's to refuse).  Raises ValueError for anything else."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def parse_time(value: str | datetime, field: str = "time") -> datetime:
    """Parse an RFC 3339 time that carries an offset; return it in UTC."""
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        try:
            dt = from_rfc3339(text)
        except ValueError:
            if _PLUS_LOST.search(text):
                raise BadInput(
                    "bad_time",
                    f"{field}:时间“{value}”的偏移量前缺少“+”(网址中的“+”会被读作空格),"
                    "请写作 %2B,例如 2026-11-26T08:00:00%2B08:00",
                    f"{field}: the '+' before the offset in '{value}' was lost (in a URL a '+'"
                    " reads as a space); write it as %2B, e.g. 2026-11-26T08:00:00%2B08:00",
                ) from None
            raise BadInput(
                "bad_time",
                f"{field}:无法识别的时间“{value}”,请使用 RFC 3339 格式,例如 2026-11-26T08:00:00+08:00",
                f"{field}: '{value}' is not an RFC 3339 time, e.g. 2026-11-26T08:00:00+08:00",
            ) from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise BadInput(
            "naive_time",
            f"{field}:时间“{value}”缺少时区,请写明偏移量,例如 +08:00",
            f"{field}: time '{value}' has no offset; add one, e.g. +08:00",
        )
    try:
        dt = dt.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        dt = EARLIEST - timedelta(days=1)
    if not in_range(dt):
        raise BadInput(
            "time_out_of_range", f"{field}:{OUT_OF_RANGE_ZH}", f"{field}: {OUT_OF_RANGE_EN}"
        )
    return dt


def utc(dt: datetime) -> datetime:
    """Normalise an aware datetime to UTC; refuse a naive one (a programming error)."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime")
    return dt.astimezone(UTC)


def next_whole_second(dt: datetime) -> datetime:
    """``dt`` rounded up to a whole second: "declared now" in a plan preview reads
    12:02:36, not 12:02:35.333949, and is never before a time given as "now"."""
    return dt if not dt.microsecond else (dt + timedelta(seconds=1)).replace(microsecond=0)


# How far ahead of the service's clock a client's clock may run.  A time given for something
# that has already happened (occurred, learned, published, held) up to this far ahead is taken
# as the service's "now": it cannot have happened later, and deadlines count from our clock.
# Further ahead is refused.  An integration sending "occurred now" from a clock a second fast
# would otherwise be refused at the one moment it matters.
CLOCK_SKEW = timedelta(minutes=2)


def at_most_now(t: datetime, now: datetime) -> datetime:
    """``t``, or ``now`` (in whole seconds) when ``t`` is ahead of it by at most CLOCK_SKEW."""
    if now < t <= now + CLOCK_SKEW:
        return now.replace(microsecond=0)
    return t


def to_db(dt: datetime | None) -> str | None:
    """The database form: UTC, second precision kept to microseconds, sortable as text."""
    if dt is None:
        return None
    return utc(dt).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_db(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text)  # 'Z' is UTC; a tenth of strptime's cost


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{name}'") from None


def local(dt: datetime, tz: ZoneInfo) -> datetime:
    return utc(dt).astimezone(tz)


def show(dt: datetime | None, tz: ZoneInfo) -> str:
    """A time as people read it: local, with the offset, to the minute."""
    if dt is None:
        return "—"
    t = local(dt, tz)
    minutes = int((t.utcoffset() or timedelta(0)).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{t:%Y-%m-%d %H:%M} {sign}{hours:02d}:{mins:02d}"  # +08:00, -05:00, +05:30


def iso_local(dt: datetime | None, tz: ZoneInfo) -> str | None:
    """RFC 3339 in the configured zone, for API answers.  Before a zone kept standard time its
    offset was local mean time (Asia/Shanghai until 1901: +08:05:43), which RFC 3339 cannot
    write: such a time is given in UTC."""
    if dt is None:
        return None
    t = local(dt, tz)
    if (t.utcoffset() or timedelta(0)).seconds % 60:
        t = utc(dt)
    return t.isoformat()


def parse_duration(text: str | int) -> timedelta:
    """'5h', '30m', '1h30m', '-2h', '2d' → timedelta.  Integers are seconds."""
    if isinstance(text, int):
        return timedelta(seconds=text)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"'{text}' is not a duration like 5h, 30m, 1h30m or -2h")
    seconds = sum(int(n) * _UNIT[u] for n, u in _PART.findall(m.group(2)))
    return timedelta(seconds=-seconds if m.group(1) else seconds)


def config_duration(value: object) -> object:
    """A duration as written in the config or a rule set: text with its unit ('5h', '30m').
    A bare number is refused: ``within = 5`` meant five hours to whoever wrote it, and taken
    as five seconds it would breach every incident the moment it is declared."""
    if isinstance(value, bool | int | float):
        raise ValueError(
            f"write the unit with the number, e.g. '{value}h' or '{value}m'"
            " (a bare number is ambiguous)"
        )
    return parse_duration(value) if isinstance(value, str) else value


def within_bounds(value: timedelta, low: timedelta, high: timedelta) -> timedelta:
    """``value`` if ``low <= value <= high``; else the reason, for a config error."""
    if not low <= value <= high:

        def said(d: timedelta) -> str:  # as the config writes it: 1s, 10s, 1h, 366d
            seconds = int(d.total_seconds())
            n, unit = next(
                (seconds // size, unit)
                for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
                if seconds % size == 0
            )
            return f"{n}{unit}"

        raise ValueError(f"must be between {said(low)} and {said(high)}")
    return value


def format_duration(delta: timedelta, lang: str = "zh") -> str:
    """A span as a person says it: 4小时59分 / 4 h 59 min."""
    total = int(abs(delta).total_seconds())
    days, rest = divmod(total, 86400)
    if days < 3:  # "24小时" reads better than "1天" for a statutory limit
        days, rest = 0, total
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if lang == "zh":
        parts = [(days, "天"), (hours, "小时"), (minutes, "分钟")]
        text = "".join(f"{n}{u}" for n, u in parts if n)
        return text or f"{seconds}秒"
    parts_en = [(days, "d"), (hours, "h"), (minutes, "min")]
    text = " ".join(f"{n} {u}" for n, u in parts_en if n)
    return text or f"{seconds} s"
