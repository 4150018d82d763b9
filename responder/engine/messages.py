"""Alert messages: render one alert for one channel and language from Jinja2 templates.

Why templates and not f-strings: the wording of a message to a city head or a spokesperson
is policy, not code.  It lives in ``templates/messages/{sms,voice,email,chat}.{zh,en}.j2``
where it can be reviewed and reworded without touching the engine, and every channel gets
the same facts in the form it can carry:

* **sms** — one terse line: drill marker, 【超时】/[OVERDUE] when it tells of a breach, level,
  title, lead unit, obligation, deadline (date and time, no year or offset), time left or
  overdue, the acknowledgement link; a message telling of several obligations lists each one's
  deadline (the time alone today, 次日/tomorrow before it tomorrow).  The Chinese SMS is
  written to fit two UCS-2 segments (134 characters) in the typical case, with a production
  ``public_url`` of ~30 characters (a gateway's signature comes on top).
* **voice** — plain speakable text for a TTS engine: no URLs, no 【】, no markdown; levels
  and durations are spelled the way they are said.
* **email** — a subject and a full plain-text body (details, legal basis, what to do,
  collapsed steps of a catch-up, the link).
* **chat** — a title and a markdown body for DingTalk / WeCom / Feishu robots (WeCom's robot
  in apprise shows text only: it gets the same message unmarked, ``send.as_text``).

The caller formats every value (times, durations, level names) before rendering; templates
only arrange them.  The environment is strict (``StrictUndefined``) so a misspelt key fails
loudly in tests instead of sending a message with a hole in it; keys that legitimately may
be absent (a watchdog message has no obligation) default to empty in :data:`OPTIONAL`, and
``None`` renders as an empty string, never as "None".  Autoescaping is off: nothing here is
HTML.

Email and chat templates define ``{% block subject %}`` / ``{% block title %}`` and
``{% block body %}``; SMS and voice templates are the whole text.  Single-line channels may
lay their template out over several lines: the renderer folds the line breaks away.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

from responder.paths import templates_dir

TEMPLATE_DIR = templates_dir() / "messages"

CHANNEL_KINDS = ("sms", "voice", "email", "chat")
LANGS = ("zh", "en")

# Keys a caller may leave out; everything else a template uses must be given.
OPTIONAL: dict[str, Any] = {
    "drill": False,
    "incident_id": "",
    "level": "",
    "level_name": "",
    "category_name": "",
    "location": "",
    "occurred_at": "",
    "lead_unit": "",
    "obligation": "",
    "basis": "",
    "deadline": "",
    "deadline_short": "",
    "deadline_spoken": "",
    "deadline_brief": "",
    "state": "",
    "remaining": "",
    "overdue": "",
    "collapsed": [],
    "action": "",
    "recipient_name": "",
    "breached": False,  # the message tells of an obligation past its deadline
    # Each obligation a message tells of (a dict of the keys above, from obligation to
    # action), when it tells of more than one: what fell due for the person at one moment.
    "items": [],
}

_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "Ⅰ": 1, "Ⅱ": 2, "Ⅲ": 3, "Ⅳ": 4}
_ZH_DIGIT = {1: "一", 2: "二", 3: "三", 4: "四"}
_URL = re.compile(r"(?:https?|ftp)://\S+|www\.\S+", re.IGNORECASE)
_UNSPEAKABLE = re.compile(r"[【】\[\]《》<>*#_`~|^\\]")
_EN_UNITS = {"d": "day", "h": "hour", "min": "minute", "s": "second"}
_EN_DURATION = re.compile(r"\b(\d+)\s*(d|h|min|s)\b")
_FOLD = re.compile(r"[ \t]*\n[ \t]*")
_SPACES = re.compile(r"\s+")
_BLANKS = re.compile(r"\n{3,}")
# Every value is one line (a title, a location, a name).  What would start a new line in mail or
# chat (U+2028 too) or turn the direction of the rest of an SMS (U+202E…) becomes a space, also
# in what was stored before the API refused it: no value can forge a line of the message.
_NOT_IN_A_LINE = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Rendered:
    title: str  # email subject / chat title; "" for sms and voice
    body: str


def channel_kind(name: str) -> str:
    """The template family for a channel name: sms, voice, email, or chat for any robot."""
    kind = (name or "").strip().lower()
    return kind if kind in CHANNEL_KINDS else "chat"


def _lang(lang: str) -> str:
    code = (lang or "").strip().lower().replace("_", "-").split("-")[0]
    return code if code in LANGS else "zh"


# --- filters -------------------------------------------------------------------------------


def _speakable(value: Any) -> str:
    """Free text made safe for TTS: no URLs, no brackets or markdown symbols."""
    text = _URL.sub("", "" if value is None else str(value))
    text = _UNSPEAKABLE.sub(" ", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def _sentence(value: Any, lang: str = "zh") -> str:
    """End a clause with a full stop unless it already ends with punctuation."""
    text = ("" if value is None else str(value)).strip()
    if not text:
        return ""
    if text[-1] in "。!?!?.;;…":
        return text
    return text + ("." if lang == "en" else "。")


def _level_number(value: Any) -> str:
    """'II' → '2' (for English speech); unknown levels pass through."""
    text = ("" if value is None else str(value)).strip()
    n = _ROMAN.get(text.upper()) or _ROMAN.get(text)
    return str(n) if n else text


def _level_zh(value: Any) -> str:
    """'II' → '二' (for Chinese speech: 二级); unknown levels pass through."""
    text = ("" if value is None else str(value)).strip()
    n = _ROMAN.get(text.upper()) or _ROMAN.get(text)
    return _ZH_DIGIT[n] if n else text


def _duration_en(value: Any) -> str:
    """'1 h 30 min' → '1 hour 30 minutes', as format_duration writes it and TTS should say it."""

    def word(m: re.Match[str]) -> str:
        n, unit = m.group(1), _EN_UNITS[m.group(2)]
        return f"{n} {unit}" + ("" if n == "1" else "s")

    return _EN_DURATION.sub(word, "" if value is None else str(value))


# Markdown's links, images and inline HTML start with these.  In free text (a title, a
# location) they become their full-width forms, which read the same in Chinese: a title
# "[确认收到](https://…)" must not become a second acknowledgement link in a chat message.
_MARKUP = str.maketrans({"[": "［", "]": "］", "<": "＜", ">": "＞"})


def _md_text(value: Any) -> str:
    """Free text (one line: the API refuses line breaks there) shown as text in markdown."""
    return ("" if value is None else str(value)).translate(_MARKUP)


def _finalize(value: Any) -> Any:
    return "" if value is None else value


ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATE_DIR)),
    autoescape=False,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
    finalize=_finalize,
    auto_reload=False,
)
ENV.filters.update(
    speakable=_speakable,
    sentence=_sentence,
    level_number=_level_number,
    level_zh=_level_zh,
    duration_en=_duration_en,
    md_text=_md_text,
)


# --- rendering -----------------------------------------------------------------------------


def _context(ctx: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = dict(OPTIONAL)
    values.update(ctx)
    for key, value in list(values.items()):
        if value is None:
            values[key] = [] if key == "collapsed" else ""
        elif isinstance(value, str):
            values[key] = _NOT_IN_A_LINE.sub(" ", value)
    values["drill"] = bool(values["drill"])
    values["breached"] = bool(values["breached"])
    values["collapsed"] = [_NOT_IN_A_LINE.sub(" ", str(s)) for s in values["collapsed"]]
    values["items"] = [
        {k: _NOT_IN_A_LINE.sub(" ", v) if isinstance(v, str) else v for k, v in item.items()}
        for item in values["items"] or []
    ]
    return values


def _blocks(template: Template, head: str, values: dict[str, Any]) -> tuple[str, str]:
    """Render the ``head`` block and the ``body`` block.  The template's top level runs first
    (its output is discarded) so the {% set %}s and macros it defines apply inside blocks."""
    context = template.new_context(values)
    for _ in template.root_render_func(context):
        pass
    return (
        "".join(template.blocks[head](context)),
        "".join(template.blocks["body"](context)),
    )


def _fold(text: str, lang: str) -> str:
    """One line.  Chinese: drop the template's line breaks (no space between clauses);
    English: every run of whitespace becomes one space."""
    if lang == "zh":
        return _FOLD.sub("", text.strip())
    return _SPACES.sub(" ", text).strip()


def _tidy(text: str) -> str:
    """A multi-line body: no trailing spaces, at most one blank line in a row."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines))


_kind_of = channel_kind  # render's parameter of the same name shadows the function


def render(channel_kind: str, lang: str, ctx: Mapping[str, Any]) -> Rendered:
    """Render the alert in ``ctx`` for a channel ("sms", "voice", "email", "chat" or a robot
    name such as "dingtalk") in ``lang`` ("zh" or "en"; anything else falls back to "zh")."""
    kind = _kind_of(channel_kind)
    code = _lang(lang)
    template = ENV.get_template(f"{kind}.{code}.j2")
    values = _context(ctx)
    if kind in ("email", "chat"):
        head, body = _blocks(template, "subject" if kind == "email" else "title", values)
        return Rendered(title=_fold(head, code), body=_tidy(body))
    return Rendered(title="", body=_fold(template.render(values), code))


__all__ = ["CHANNEL_KINDS", "ENV", "TEMPLATE_DIR", "Rendered", "channel_kind", "render"]
