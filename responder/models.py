"""What a client may send: pydantic models shared by the API, the pages and the CLI.

Unknown fields are refused; times must carry an offset.  Business checks that need the
database or the clock (is the unit known? is the time in the future?) live in ``ops``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

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


# What the OpenAPI document says of a time, so that a client generated from it sends one the
# service takes: RFC 3339 with "T" and an offset, in the years the service keeps.  (The range is
# checked in UTC, which the pattern cannot do: 1900-01-01T00:30:00+01:00 is still 1899 there.)
TIME_PATTERN = (
    r"^(19\d\d|2\d\d\d)-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
TIME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "date-time",
    "pattern": TIME_PATTERN,
    "description": "RFC 3339 with an offset (Z or ±hh:mm), e.g. 2026-11-26T08:00:00+08:00;"
    " years 1900 to 2999 (in UTC)",
}


@dataclass(frozen=True)
class Documented:
    """What the OpenAPI document adds to a field's schema: a ``pattern`` the field's own checks
    enforce (so a client generated from the document sends what is taken), a ``description``
    of what no schema can say, and a vendor ``marker`` filled in per deployment
    (``x-unit``: the configured unit ids, see ``responder.web.schemas``)."""

    pattern: str | None = None
    description: str | None = None
    marker: str | None = None

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core)
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.description is not None:
            schema["description"] = self.description
        if self.marker is not None:
            schema[self.marker] = True
        return schema


def _checked(rules: str, **field: Any) -> Any:
    """A time field whose description adds what the service checks against the clock and the
    incident, which no schema can say (each with the error code it answers)."""
    return Field(description=f"{TIME_SCHEMA['description']}. {rules}", **field)


AwareTime = Annotated[
    datetime, BeforeValidator(_rfc3339), AfterValidator(_aware), WithJsonSchema(TIME_SCHEMA)
]

# Text goes into SMS, voice calls, mail and chat.  A NUL may cut a message short at a gateway
# written in C (taking the deadline and the acknowledgement link with it); escape sequences
# reach terminals and logs.  Control characters are refused; multi-line text keeps its line
# breaks and tabs.  One-line text also refuses what starts a new line without being a control
# character — U+2028 and U+2029, new lines to mail and chat clients ("Fire\u2028Acknowledge:
# https://evil.example/…") — and the controls that turn the direction of the text after them
# (U+202A–U+202E, U+2066–U+2069: U+202E showed the rest of an SMS reversed).  The marks LRM
# and RLM (U+200E, U+200F), which right-to-left text such as Uyghur may need, stay allowed.
#
# Each is a character class written alike for Python and for the patterns of the OpenAPI
# document (ECMA-262): the document and the checks cannot disagree.
CONTROLS = r"\x00-\x1f\x7f-\x9f"
CONTROLS_BUT_LINES = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
LINE_SEPARATORS = r"\u2028\u2029"
DIRECTION_CONTROLS = r"\u202a-\u202e\u2066-\u2069"
NOT_ONE_LINE = CONTROLS + LINE_SEPARATORS + DIRECTION_CONTROLS
# What str.strip() removes (Python's whitespace): a reason of only these is empty.
SPACES = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# What shows nothing: controls, spaces and separators, format characters (zero-width ones
# among them: Unicode's Cf), the Hangul fillers and the blank Braille pattern.
INVISIBLE = (
    r"\x00-\x20\x7f-\xa0\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u1680"
    r"\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u2800\u3000\u3164\ufeff"
    r"\uffa0\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_CONTROL = re.compile(f"[{CONTROLS}{LINE_SEPARATORS}]")
_DIRECTION = re.compile(f"[{DIRECTION_CONTROLS}]")
_CONTROL_BUT_LINES = re.compile(f"[{CONTROLS_BUT_LINES}]")
_SHOWS_SOMETHING = re.compile(f"[^{INVISIBLE}]")
NO_CONTROLS = (
    "不能包含控制字符(如 NUL、换行) / must not contain control characters (NUL, line breaks…)"
)
NO_DIRECTION = (
    "不能包含改变文字方向的控制字符(U+202A–U+202E、U+2066–U+2069)"
    " / must not contain characters that turn the direction of the text"
    " (U+202A–U+202E, U+2066–U+2069)"
)
NO_CONTROLS_BUT_LINES = "不能包含控制字符(如 NUL) / must not contain control characters such as NUL"

ONE_LINE_PATTERN = f"^[^{NOT_ONE_LINE}]*$"
LINES_PATTERN = f"^[^{CONTROLS_BUT_LINES}]*$"
REASON_PATTERN = (
    f"^[^{CONTROLS_BUT_LINES}]*[^{CONTROLS_BUT_LINES}{SPACES}][^{CONTROLS_BUT_LINES}]*$"
)
TITLE_PATTERN = f"^[^{NOT_ONE_LINE}]*[^{INVISIBLE}][^{NOT_ONE_LINE}]*$"
URL_PATTERN = f"^([Hh][Tt][Tt][Pp][Ss]?://[^{NOT_ONE_LINE}{SPACES}/?#]+[^{NOT_ONE_LINE}]*)?$"


def _one_line(v: str) -> str:
    if _CONTROL.search(v):
        raise ValueError(NO_CONTROLS)
    if _DIRECTION.search(v):
        raise ValueError(NO_DIRECTION)
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
    if not _SHOWS_SOMETHING.search(v):
        raise ValueError("须包含可见的文字 / must contain visible characters")
    return v


def _whole_number(v: object) -> object:
    """A JSON number with nothing after the point is that whole number (as JSON Schema counts
    475513.0 an integer); text and true/false are still refused."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


# A row's id in a body (a press conference, a decision): a whole number, 475513.0 included.
RowId = Annotated[StrictInt, Field(ge=1, le=2**62 - 1), BeforeValidator(_whole_number)]


Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=4000),
    AfterValidator(_lines),
    Documented(LINES_PATTERN),
]
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=200),
    AfterValidator(_one_line),
    Documented(ONE_LINE_PATTERN, "one line: no control characters, line or paragraph"
               " separators (U+2028, U+2029) or direction controls (U+202A–U+202E,"
               " U+2066–U+2069)"),
]  # fmt: skip
Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
    AfterValidator(_lines),
    Documented(REASON_PATTERN, "not empty or only spaces; line breaks and tabs allowed"),
]
Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_one_line),
    AfterValidator(_visible),
    Documented(TITLE_PATTERN, "one line (as other one-line text) with at least one visible"
               " character: not only spaces or zero-width characters"),
]  # fmt: skip
# A unit's id: the document lists the configured ones (``x-unit``, see responder.web.schemas).
UnitId = Annotated[ShortText, Documented(marker="x-unit")]
WebAddress = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=2000),
    AfterValidator(_one_line),
    AfterValidator(_web_address),
    Documented(URL_PATTERN, "where it was published: an http:// or https:// address, or empty"),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=20000)


NOT_FUTURE = "Not later than now (422 `time_in_future`)."
MILESTONE = (
    "Not later than now (422 `time_in_future`), nor before the incident occurred"
    " (422 `before_occurrence`)."
)
SCHEDULED = (
    "Not past (422 `scheduled_in_past`: record a conference that was held as held), nor before"
    " the incident occurred (422 `before_occurrence`)."
)


class DeclareIncident(_In):
    title: Title
    category: Category
    level: Level
    occurred_at: AwareTime = _checked(NOT_FUTURE)
    learned_at: AwareTime | None = _checked(
        "When the office learned of it. Not before occurred_at (422 `learned_before_occurred`),"
        " nor later than now (422 `time_in_future`).",
        default=None,
    )
    location: ShortText = ""
    summary: Text = ""
    lead_unit: UnitId
    co_units: list[UnitId] = Field(default_factory=list, max_length=50)
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
    published_at: AwareTime = _checked(MILESTONE)
    channels: list[ShortText] = Field(default_factory=list, max_length=20)
    url: WebAddress = ""
    text: Text = ""
    checklist: Checklist = Field(default_factory=Checklist)


class SchedulePressConference(_In):
    scheduled_at: AwareTime = _checked(SCHEDULED)
    venue: ShortText = ""
    spokesperson: ShortText = ""


class ReschedulePressConference(_In):
    scheduled_at: AwareTime = _checked(SCHEDULED)
    venue: ShortText | None = None
    spokesperson: ShortText | None = None
    reason: Reason


class PressConferenceHeld(_In):
    press_conference_id: RowId | None = Field(
        None, description="the scheduled conference this was; omit if none was scheduled"
    )
    held_at: AwareTime = _checked(MILESTONE)
    venue: ShortText = ""
    spokesperson: ShortText = ""
    principal_leader_spoke: StrictBool
    notes: Text = ""


class ChangeLevel(_In):
    level: Level = Field(
        description="the new level: not the one the incident has (422 `same_level`)"
    )
    reason: Reason


class CloseIncident(_In):
    reason: Reason
