"""What a client may send: pydantic models shared by the API, the pages and the CLI.

Unknown fields are refused; times must carry an offset.  Business checks that need the
database or the clock (is the unit known? is the time in the future?) live in ``ops``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
)

from responder.timeutil import OUT_OF_RANGE_EN, OUT_OF_RANGE_ZH, from_rfc3339, in_range, utc

CATEGORIES = {
    "natural_disaster": ("自然灾害", "natural disaster"),
    "accident": ("事故灾难", "accident"),
    "public_health": ("公共卫生事件", "public health event"),
    "social_security": ("社会安全事件", "social security event"),
}
Category = Literal["natural_disaster", "accident", "public_health", "social_security"]
Level = Literal["I", "II", "III", "IV"]

CHECKLIST = {
    "time_place": ("时间地点", "time and place"),
    "what_happened": ("事件经过", "what happened"),
    "casualties_losses": ("伤亡和损失", "casualties and losses"),
    "measures": ("处置措施", "measures taken"),
    "public_advice": ("公众提示", "advice to the public"),
    "next_release": ("下次发布安排", "next release"),
    "contact": ("联系方式", "contact"),
}


OUT_OF_RANGE = f"{OUT_OF_RANGE_ZH} / {OUT_OF_RANGE_EN}"


def _aware(v: datetime) -> datetime:
    if v.tzinfo is None or v.utcoffset() is None:
        raise ValueError("时间缺少时区偏移量,例如 +08:00 / the time has no offset, e.g. +08:00")
    try:
        t = utc(v)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise ValueError(OUT_OF_RANGE) from None
    if not in_range(t):
        raise ValueError(OUT_OF_RANGE)
    return t


NOT_RFC_3339 = (
    "须为带时区偏移量的 RFC 3339 时间,例如 2026-11-26T08:00:00+08:00"
    " / must be an RFC 3339 time with an offset, e.g. 2026-11-26T08:00:00+08:00"
)


def _rfc3339(v: object) -> object:
    """Only RFC 3339 text (or a datetime from our own code).  pydantic alone would also take
    a number, or digits in a string, as seconds or milliseconds since 1970 — a guess: 4
    would be a time in 1970, and a roster system's milliseconds a time found by heuristics."""
    if isinstance(v, datetime):
        return v
    if not isinstance(v, str):
        raise ValueError(NOT_RFC_3339)
    try:
        return from_rfc3339(v)
    except ValueError:
        raise ValueError(NOT_RFC_3339) from None


AwareTime = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_aware)]

# Text goes into SMS, voice calls and mail.  A NUL may cut a message short at a gateway written
# in C (taking the deadline and the acknowledgement link with it); escape sequences reach
# terminals and logs.  Control characters are refused; multi-line text keeps its line breaks
# and tabs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
NO_CONTROLS = (
    "不能包含控制字符(如 NUL、换行) / must not contain control characters (NUL, line breaks…)"
)
NO_CONTROLS_BUT_LINES = "不能包含控制字符(如 NUL) / must not contain control characters such as NUL"


def _one_line(v: str) -> str:
    if _CONTROL.search(v):
        raise ValueError(NO_CONTROLS)
    return v


def _lines(v: str) -> str:
    if _CONTROL_BUT_LINES.search(v):
        raise ValueError(NO_CONTROLS_BUT_LINES)
    return v


def _web_address(v: str) -> str:
    """Where a release was published: a web address people can open, or nothing.  A
    ``javascript:`` or ``data:`` address is no place of publication, and would be a link that
    runs code wherever a page or a message shows it."""
    if v and not re.match(r"https?://[^\s/?#]+", v, re.IGNORECASE):
        raise ValueError(
            "须为以 http:// 或 https:// 开头的网址 / must be a web address starting with http://"
            " or https://"
        )
    return v


def _visible(v: str) -> str:
    """A title people can read: not only zero-width or other invisible characters."""
    if not any(unicodedata.category(c)[0] in "LNPS" for c in v):
        raise ValueError("须包含可见的文字 / must contain visible characters")
    return v


Text = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=4000), AfterValidator(_lines)
]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_one_line)
]
Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
    AfterValidator(_lines),
]
Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_one_line),
    AfterValidator(_visible),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=20000)


class DeclareIncident(_In):
    title: Title
    category: Category
    level: Level
    occurred_at: AwareTime
    learned_at: AwareTime | None = None
    location: ShortText = ""
    summary: Text = ""
    lead_unit: ShortText
    co_units: list[ShortText] = Field(default_factory=list, max_length=50)
    drill: StrictBool = False


class Checklist(_In):
    """What an authoritative release covers, so that it is not perfunctory (不敷衍)."""

    time_place: StrictBool = False
    what_happened: StrictBool = False
    casualties_losses: StrictBool = False
    measures: StrictBool = False
    public_advice: StrictBool = False
    next_release: StrictBool = False
    contact: StrictBool = False

    def missing(self) -> list[str]:
        return [k for k in CHECKLIST if not getattr(self, k)]


class RecordRelease(_In):
    published_at: AwareTime
    channels: list[ShortText] = Field(default_factory=list, max_length=20)
    url: Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=2000),
        AfterValidator(_one_line),
        AfterValidator(_web_address),
    ] = ""
    text: Text = ""
    checklist: Checklist = Field(default_factory=Checklist)


class SchedulePressConference(_In):
    scheduled_at: AwareTime
    venue: ShortText = ""
    spokesperson: ShortText = ""


class ReschedulePressConference(_In):
    scheduled_at: AwareTime
    venue: ShortText | None = None
    spokesperson: ShortText | None = None
    reason: Reason


class PressConferenceHeld(_In):
    press_conference_id: StrictInt | None = Field(
        None,
        ge=1,
        le=2**62 - 1,
        description="the scheduled conference this was; omit if none was scheduled",
    )
    held_at: AwareTime
    venue: ShortText = ""
    spokesperson: ShortText = ""
    principal_leader_spoke: StrictBool
    notes: Text = ""


class ChangeLevel(_In):
    level: Level
    reason: Reason


class CloseIncident(_In):
    reason: Reason
