"""Page forms: what a person typed → the API's own pydantic models, and every refusal → the
field it is about, in the page's language.

The forms post what a browser posts (url-encoded text; a ticked box as ``on``; a time from a
``datetime-local`` picker as ``2026-11-26T08:00``, in the configured zone).  They are turned
into the same models the API validates (:mod:`responder.models`), and the change goes through
the same operations (``app[OPS]``).  A refusal is shown next to its field, and the form is
shown again with what was typed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ValidationError

from responder.errors import ResponderError
from responder.timeutil import local
from responder.web.errors import validation_detail
from responder.web.identity import identify
from responder.web.keys import CLOCK
from responder.web.layout import pick, same_site_path

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


# -- what was typed, kept across signing in again ---------------------------------------------
#
# A form posted after the page session ended (12 hours, or signed out in another tab) used to
# be answered with the sign-in page, and what was typed was gone.  Now the sign-in page carries
# it in hidden fields (bounded; never the CSRF token, the form's key or anything like a
# password); once signed in, it waits here for the new session, and the page it was typed on
# shows it again, filled in but not sent: the officer checks it and submits again, with the new
# session's CSRF token.

KEEP_PREFIX = "kept."
KEEP_MAX_FIELDS = 40
KEEP_MAX_CHARS = 20_000  # in all: a long summary (4,000) and the rest of a form fit
KEEP_SECONDS = 600  # signing in takes a minute, not an hour
_KEEP_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_FORM_NAME = re.compile(r"[a-z][a-z_]{0,31}")
_NOT_KEPT = ("csrf", "key", "action", "next")
_SECRET_WORDS = ("password", "passwd", "secret", "token")


@dataclass
class KeptForm:
    """A form typed on ``page`` (a same-site path), ``form`` naming which of the page's forms."""

    page: str
    form: str
    values: dict[str, str]


def kept_values(form: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The fields of ``form`` (those named ``prefix`` + name) that may be carried through
    signing in: plain names, text only, bounded in number and size."""
    out: dict[str, str] = {}
    total = 0
    for name, value in form.items():
        bare = name[len(prefix) :] if name.startswith(prefix) else None
        if bare is None or bare in out or not _KEEP_NAME.fullmatch(bare) or bare in _NOT_KEPT:
            continue
        if any(word in bare for word in _SECRET_WORDS) or not isinstance(value, str):
            continue
        value = value[:5000]
        if len(out) >= KEEP_MAX_FIELDS or total + len(value) > KEEP_MAX_CHARS:
            break
        out[bare] = value
        total += len(value)
    return out


def kept_form(page: object, form: object, values: dict[str, str]) -> KeptForm | None:
    """A :class:`KeptForm` if ``page`` is a path on this site and ``form`` a form's name."""
    path = same_site_path(page)
    if path is None or not isinstance(form, str) or not _FORM_NAME.fullmatch(form):
        return None
    return KeptForm(path.split("?")[0], form, values)


class KeptForms:
    """Forms kept for sessions just started, each taken once by the page it was typed on."""

    MAX = 500  # sign-ins within KEEP_SECONDS: far more than a duty room makes

    def __init__(self) -> None:
        self._by_session: dict[str, tuple[KeptForm, datetime]] = {}

    def put(self, session_id: str, kept: KeptForm, now: datetime) -> None:
        self._by_session = {s: k for s, k in self._by_session.items() if k[1] > now}
        while len(self._by_session) >= self.MAX:
            del self._by_session[next(iter(self._by_session))]  # the oldest
        self._by_session[session_id] = (kept, now + timedelta(seconds=KEEP_SECONDS))

    def take(self, session_id: str, page: str, now: datetime) -> KeptForm | None:
        found = self._by_session.get(session_id)
        if found is None or found[0].page != page:
            return None  # another page first: it waits for its own (until it is too old)
        del self._by_session[session_id]
        return found[0] if found[1] > now else None


KEPT = web.AppKey("kept_forms", KeptForms)


def take_kept(request: web.Request, user: Mapping[str, Any]) -> KeptForm | None:
    """The form this visitor typed on this page before signing in again, if any."""
    kept = request.app.get(KEPT)
    if kept is None or not user.get("sid"):
        return None
    return kept.take(str(user["sid"]), request.rel_url.path, request.app[CLOCK].now())


async def session_ended(request: web.Request) -> bool:
    """Whether a form came without a live page session (ended, signed out elsewhere)."""
    user = await identify(request)
    return user is None or "csrf" not in user


def from_our_pages(request: web.Request) -> bool:
    """Whether the browser says the form was sent from one of our pages (a browser without
    Fetch Metadata says nothing, and is believed): another site's form is never kept."""
    return request.headers.get("Sec-Fetch-Site", "same-origin") == "same-origin"
