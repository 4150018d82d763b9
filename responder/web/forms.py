"""Page forms: what a person typed → the API's own pydantic models, and every refusal → the
field it is about, in the page's language.

The forms post what a browser posts (url-encoded text; a ticked box as ``on``; a time from a
``datetime-local`` picker as ``2026-11-26T08:00``, in the configured zone).  They are turned
into the same models the API validates (:mod:`responder.models`), and the change goes through
the same operations (``app[OPS]``).  A refusal is shown next to its field, and the form is
shown again with what was typed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from responder.errors import ResponderError
from responder.timeutil import local
from responder.web.errors import validation_detail
from responder.web.layout import pick

# Refusals that name no field in their text, and the field they are about.
FIELD_OF_CODE = {
    "learned_before_occurred": "learned_at",
    "scheduled_in_past": "scheduled_at",
    "same_level": "level",
    "unknown_unit": "lead_unit",
}
PLAIN = {  # what the person reads instead of a message written for programs
    "learned_before_occurred": ("获知时间不能早于发生时间", "cannot be before it occurred"),
    "missing": ("请填写此项", "required"),
    # The same form sent again with something else in it (an old page, the back button).
    "idempotency_key_reused": (
        "此表单已经提交过;请刷新页面后重新填写",
        "this form was sent already: reload the page and fill it in again",
    ),
}


@dataclass
class Filled:
    """A form as posted: the values to show again, and the errors by field ("" for the form
    as a whole)."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def error(self, name: str, text: str) -> None:
        self.errors.setdefault(name, text)


def text_values(form: Mapping[str, Any], names: Iterable[str]) -> dict[str, str]:
    return {n: str(form.get(n, ""))[:5000] for n in names}


def picker_value(dt: datetime | None, tz: ZoneInfo) -> str:
    """A time for a ``datetime-local`` input: local, to the minute."""
    return local(dt, tz).strftime("%Y-%m-%dT%H:%M") if dt else ""


def local_time(
    filled: Filled, form: Mapping[str, Any], name: str, tz: ZoneInfo, lang: str, required: bool
) -> datetime | None:
    """The time typed in the ``name`` picker, in the configured zone; an error for the field
    when it is missing (and required) or not a date and time."""
    raw = str(form.get(name, "")).strip()
    if not raw:
        if required:
            filled.error(name, pick(lang, "请填写日期和时间", "enter a date and time"))
        return None
    try:
        naive = datetime.fromisoformat(raw)
        if naive.tzinfo is not None:
            raise ValueError("an offset")
        return naive.replace(tzinfo=tz)
    except ValueError:
        filled.error(
            name,
            pick(lang, "请按“年-月-日 时:分”填写", "enter it as year-month-day hour:minute"),
        )
        return None


def model(
    filled: Filled, kind: type[BaseModel], data: dict[str, Any], lang: str
) -> BaseModel | None:
    """``data`` as the API's model ``kind``; None (with each problem on its field) if not."""
    try:
        made = kind.model_validate(data)
    except ValidationError as e:
        for d in validation_detail(e):
            name = d["field"].split(".")[0]
            zh, en = PLAIN.get(d["type"], (d["problem_zh"], d["problem"]))
            filled.error(name, pick(lang, zh, en))
        return None
    return None if filled.errors else made


def refusal(filled: Filled, e: ResponderError, lang: str, fields: Iterable[str]) -> None:
    """Put an operation's refusal next to the field it is about, or above the form."""
    names = list(fields)
    zh, en = PLAIN.get(e.code, (e.zh, e.en))
    name = FIELD_OF_CODE.get(e.code, "")
    for f in names:  # "occurred_at 不能晚于当前时间…": the message names its field first
        if zh.startswith(f) or en.startswith(f):
            name = f
            zh = _after_name(zh, f)
            en = _after_name(en, f)
            break
    if name and name not in names:
        name = ""
    filled.error(name, pick(lang, zh, en))


def _after_name(message: str, name: str) -> str:
    """The message without the field name it starts with ("occurred_at: …" → "…")."""
    rest = message.removeprefix(name)
    while rest[:1] in (" ", ":", ":"):
        rest = rest[1:]
    return rest
