"""Declaring an incident from the browser: ``/incidents/new``.

Three steps on one address: the form; a preview of what the planner will do (the deadlines
and every alert step, with the people each reaches — the same plan as ``GET /api/v1/plan``,
:func:`responder.views.preview`); and the confirmation, which declares through ``app[OPS]``.

The form carries an idempotency key made when it was first shown (``layout.form_key``): a
double click, or the browser posting the confirmation again, declares once and shows the same
incident (see :mod:`responder.idempotency`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from responder import incidents
from responder.config import Config
from responder.errors import BadInput, ResponderError
from responder.idempotency import DECLARE, Once
from responder.models import CATEGORIES, DeclareIncident
from responder.ops import clock_ahead
from responder.policy.rules import LEVEL_NAMES, LEVEL_NAMES_EN, LEVELS
from responder.timeutil import at_most_now, format_duration, next_whole_second, show
from responder.views import preview, steps_in_words, unit_words
from responder.web.forms import (
    Filled,
    local_time,
    model,
    picker_value,
    refusal,
    session_ended,
    take_kept,
    text_values,
)
from responder.web.identity import actor
from responder.web.keys import CFG, CLOCK, OPS
from responder.web.layout import (
    PageForbidden,
    form_key,
    operator,
    page_language,
    pick,
    read_form,
    render,
    signed_in,
)
from responder.web.pages import sign_in_again
from responder.web.routing import OPERATE

FIELDS = (
    "title",
    "category",
    "level",
    "occurred_at",
    "learned_at",
    "lead_unit",
    "location",
    "summary",
    "drill",
)
_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _choices(cfg: Config, lang: str) -> dict[str, Any]:
    return {
        "categories": [(k, pick(lang, *v)) for k, v in CATEGORIES.items()],
        "levels": [
            (
                lv,
                pick(lang, f"{lv}级 — {LEVEL_NAMES[lv]}", f"Level {lv} — {LEVEL_NAMES_EN[lv]}"),
            )
            for lv in LEVELS
        ],
        "units": [(u.id, pick(lang, u.name, u.name_en or u.name)) for u in cfg.units],
    }


def _read(form: Any, cfg: Config, lang: str) -> tuple[Filled, DeclareIncident | None]:
    """The declaration typed in the form, as the API's model, or the errors by field."""
    filled = Filled(values=text_values(form, FIELDS))
    filled.values["drill"] = form.get("drill") == "on"
    occurred = local_time(filled, form, "occurred_at", cfg.tz, lang, required=True)
    learned = local_time(filled, form, "learned_at", cfg.tz, lang, required=False)
    data: dict[str, Any] = {
        k: filled.values[k].strip()
        for k in ("title", "category", "level", "lead_unit", "location", "summary")
    }
    data = {k: v for k, v in data.items() if v or k in ("title",)}
    data["drill"] = filled.values["drill"]
    if occurred is not None:
        data["occurred_at"] = occurred
    if learned is not None:
        data["learned_at"] = learned
    made = model(filled, DeclareIncident, data, lang)
    return filled, made if isinstance(made, DeclareIncident) else None


def _key(form: Any) -> str:
    key = str(form.get("key", ""))
    if not key.startswith("page-") or not 10 <= len(key) <= 64 or not set(key[5:]) <= _KEY_CHARS:
        raise ResponderError(
            "stale_form",
            "此表单已失效,请重新打开申报页面",
            "this form is no longer valid: open the declaration page again",
        )
    return key


def plan_for_page(
    cfg: Config, data: DeclareIncident, declared_at: datetime, lang: str
) -> dict[str, Any]:
    """The planner's preview in words: deadlines, what falls due at once, and each step with
    the people it reaches and on which channels."""
    view = preview(cfg, data.level, data.occurred_at, declared_at)
    tz = cfg.tz
    obligations = [
        {
            "name": pick(lang, o["name"], o["name_en"]),
            "deadline": show(datetime.fromisoformat(o["deadline"]), tz),
            "within": format_duration(timedelta(seconds=o["within_s"]), lang),
            "breached": o["status"] == "breached",
        }
        for o in view["obligations"]
    ]
    steps = [
        {
            **s,
            "due": show(datetime.fromisoformat(s["due_at"]), tz),
            "at_once": datetime.fromisoformat(s["due_at"]) <= declared_at,
        }
        for s in steps_in_words(view, cfg, lang, data.lead_unit, data.co_units)
    ]
    rules = view["rule_set"]
    return {
        "rule_set": pick(lang, rules["title"], rules["title_en"] or rules["title"])
        if rules
        else "",
        "obligations": obligations,
        "after_release": [
            {
                "name": pick(lang, r["name"], r["name_en"]),
                "within": format_duration(timedelta(seconds=r["within_s"]), lang),
            }
            for r in view["after_release"]
        ],
        "steps": steps,
        "any_breached": any(o["breached"] for o in obligations),
        "declared_at": show(declared_at, tz),
    }


def _page(
    request: web.Request,
    user: dict[str, Any],
    filled: Filled,
    key: str,
    plan: dict[str, Any] | None = None,
    status: int = 200,
    restored: bool = False,
) -> web.Response:
    cfg, lang = request.app[CFG], page_language(request)
    return render(
        request,
        "declare.html",
        {
            **_choices(cfg, lang),
            "v": filled.values,
            "errors": filled.errors,
            "key": key,
            "plan": plan,
            "summary": _summary(cfg, filled.values, lang) if plan else {},
            "restored": restored,
        },
        status=status,
        user=user,
    )


def _summary(cfg: Config, v: dict[str, Any], lang: str) -> dict[str, str]:
    """What is about to be declared, in words, for the confirmation step."""
    level = v.get("level", "")
    category = CATEGORIES.get(v.get("category", ""), ("", ""))
    return {
        "level": pick(lang, f"{level}级({LEVEL_NAMES.get(level, '')})", f"level {level}"),
        "category": pick(lang, *category),
        "lead_unit": unit_words(cfg, v.get("lead_unit", ""), lang),
        "occurred_at": v.get("occurred_at", "").replace("T", " "),
        "learned_at": v.get("learned_at", "").replace("T", " "),
    }


async def new_incident(request: web.Request) -> web.Response:
    user = await signed_in(request)
    if user["role"] not in OPERATE:
        raise PageForbidden(
            "forbidden",
            "您的角色只能查看,不能申报事件;如需操作,请联系管理员",
            "your role can read but not declare; ask an administrator",
        )
    cfg = request.app[CFG]
    now = request.app[CLOCK].now()
    filled = Filled(values={"occurred_at": picker_value(now, cfg.tz), "lead_unit": ""})
    kept = take_kept(request, user)
    if kept is not None:  # typed before signing in again: shown, not sent
        filled = Filled(values=text_values(kept.values, FIELDS))
        filled.values["drill"] = kept.values.get("drill") == "on"
    return _page(request, user, filled, form_key(), restored=kept is not None)


async def declare_post(request: web.Request) -> web.Response:
    """Preview (``action=preview``), back to the form (``edit``) or declare (``confirm``)."""
    form = await read_form(request)
    if await session_ended(request):
        return sign_in_again(request, form, "/incidents/new", "declare")
    user = await operator(request, form)
    cfg, lang = request.app[CFG], page_language(request)
    key = _key(form)
    filled, data = _read(form, cfg, lang)
    action = form.get("action")
    if action == "edit" or data is None:
        return _page(request, user, filled, key, status=200 if action == "edit" else 422)
    real = request.app[CLOCK].now()
    who = actor(user)
    try:
        # The checks the declaration makes (times, units), so the preview shows nothing the
        # confirmation would refuse.  Nothing is written here.
        taken, given = clock_ahead(data, ("occurred_at", "learned_at"), real)
        incidents.declaration(cfg, taken, given, who, real)
        if action != "confirm":
            declared_at = next_whole_second(real)
            shown = taken.model_copy(update={"occurred_at": at_most_now(taken.occurred_at, real)})
            plan = plan_for_page(cfg, shown, declared_at, lang)
            return _page(request, user, filled, key, plan=plan)
        once = Once.of(who, key, DECLARE, data.model_dump(mode="json"))
        incident_id = await request.app[OPS].declare(data, who, once)
    except ResponderError as e:
        if e.code == "idempotency_key_reused":  # this form declared an incident already
            e = BadInput(
                "form_used",
                "此表单已用于申报另一起事件;如需申报新事件,请重新打开申报页面",
                "this form already declared another incident: open the declaration page again"
                " for a new one",
            )
        refusal(filled, e, lang, FIELDS)
        return _page(request, user, filled, key, status=e.status)
    raise web.HTTPSeeOther(f"/incidents/{incident_id}")


def setup(app: web.Application) -> None:
    app.router.add_get("/incidents/new", new_incident)
    app.router.add_post("/incidents/new", declare_post)
