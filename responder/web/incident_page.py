"""One incident's page (``/incidents/{id}``): its duties with live countdowns, what has been
recorded, its timeline, and the forms a duty officer records milestones with.

Forms: the authoritative release (with its content checklist), a follow-up release, the press
conference (schedule, reschedule, held), a level change and closing — each a POST to its own
address under the incident, validated by the API's own model and carried out by the same
operation as the API (``app[OPS]``), with an idempotency key made when the page was shown (a
double click records once).  A refused form is shown again with the error next to its field
and what was typed; a recorded one goes back to the page (303), which says what was recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from responder import queries
from responder.config import Config
from responder.errors import ResponderError
from responder.idempotency import Once
from responder.models import (
    CHECKLIST,
    ChangeLevel,
    CloseIncident,
    PressConferenceHeld,
    RecordRelease,
    ReschedulePressConference,
    SchedulePressConference,
)
from responder.ops import Ops
from responder.policy.rules import LEVEL_NAMES, LEVEL_NAMES_EN, LEVELS
from responder.timeutil import show
from responder.views import unit_words
from responder.web.console import card, live_attrs, stamp
from responder.web.forms import (
    Filled,
    local_time,
    model,
    picker_value,
    refusal,
    session_ended,
    take_kept,
)
from responder.web.identity import actor
from responder.web.keys import CFG, CLOCK, DB, OPS
from responder.web.layout import form_key, operator, page_language, pick, read_form, render
from responder.web.layout import signed_in as who_is_signed_in
from responder.web.pages import sign_in_again
from responder.web.timeline import timeline

# What each item of a release's checklist asks, in a line (the names are models.CHECKLIST).
CHECKLIST_HINTS = {
    "time_place": ("何时、何地发生", "when and where it happened"),
    "what_happened": ("事件的基本经过", "what happened, in outline"),
    "casualties_losses": ("伤亡人数和损失(已知的,或说明尚在核实)", "casualties and losses known (or that they are being checked)"),
    "measures": ("已采取的处置和救援措施", "the response and rescue measures taken"),
    "public_advice": ("公众应注意和避免的事项", "what the public should do or avoid"),
    "next_release": ("下一次发布的时间或方式", "when or how the next release will come"),
    "contact": ("咨询电话或联系渠道", "a telephone number or contact for questions"),
}  # fmt: skip
DONE = {
    "release": ("已记录权威信息发布。", "The authoritative release is recorded."),
    "follow_up": ("已记录持续发布。", "The follow-up release is recorded."),
    "scheduled": ("已安排新闻发布会。", "The press conference is scheduled."),
    "rescheduled": ("新闻发布会已改期。", "The press conference is rescheduled."),
    "held": ("已记录新闻发布会举行。", "The press conference is recorded as held."),
    "level": ("事件级别已调整。", "The level is changed."),
    "closed": ("事件已结束。", "The incident is closed."),
}


def _incident_id(request: web.Request) -> str:
    value = request.match_info["incident_id"]
    if len(value) > 64:  # no incident has such an id (as the API's incident_id)
        raise web.HTTPNotFound()
    return value


def _forms(
    incident: dict[str, Any], found: dict[str, list[Any]], cfg: Config, lang: str
) -> dict[str, Any]:
    """Which forms the page offers, given what has been recorded."""
    live = {o["kind"] for o in incident["obligations"] if o["status"] != "waived"}
    released = any(r["kind"] == "authoritative" for r in found["releases"])
    release_due = any(
        o["kind"] == "authoritative_release" and not o["met_at"] and o["status"] != "waived"
        for o in incident["obligations"]
    )
    scheduled = next((p for p in found["press_conferences"] if p["status"] == "scheduled"), None)
    return {
        "release": release_due or not released,
        "follow_up": released and not release_due,
        "scheduled": scheduled,
        "press_due": "press_conference" in live,
        "levels": [
            (lv, pick(lang, f"{lv}级 — {LEVEL_NAMES[lv]}", f"Level {lv} — {LEVEL_NAMES_EN[lv]}"))
            for lv in LEVELS
            if lv != incident["level"]
        ],
        "checklist": [
            (k, pick(lang, *CHECKLIST[k]), pick(lang, *CHECKLIST_HINTS[k])) for k in CHECKLIST
        ],
    }


def _recorded(found: dict[str, list[Any]], cfg: Config, lang: str) -> dict[str, list[Any]]:
    """Releases and press conferences as the page lists them."""

    def at(value: str | None) -> str:
        return show(datetime.fromisoformat(value), cfg.tz) if value else ""

    releases = []
    for r in found["releases"]:
        missing = [pick(lang, *CHECKLIST[k]) for k in CHECKLIST if not r["checklist"].get(k)]
        releases.append(
            {
                "kind": pick(lang, "权威信息发布", "authoritative release")
                if r["kind"] == "authoritative"
                else pick(lang, "持续发布", "follow-up release"),
                "at": at(r["published_at"]),
                "url": r["url"],
                "missing": pick(lang, "、", ", ").join(missing),
                "recorded_late": r["recorded_late"],
            }
        )
    conferences = [
        {
            "status": p["status"],
            "scheduled_at": at(p["scheduled_at"]),
            "held_at": at(p["held_at"]),
            "venue": p["venue"],
            "spokesperson": p["spokesperson"],
        }
        for p in found["press_conferences"]
    ]
    return {"releases": releases, "press_conferences": conferences}


async def _show(
    request: web.Request,
    user: dict[str, Any],
    errors: dict[str, dict[str, str]] | None = None,
    values: dict[str, dict[str, Any]] | None = None,
    status: int = 200,
    restored: bool = False,
) -> web.Response:
    db, cfg, lang = request.app[DB], request.app[CFG], page_language(request)
    iid = _incident_id(request)
    incident = await queries.incident(db, cfg, iid)
    now = request.app[CLOCK].now()
    signals = await queries.alert_signals(db, cfg, [iid])
    found = await queries.milestones(db, cfg, iid)
    events = timeline(
        await queries.timeline(db, cfg, iid),
        await queries.notifications(db, cfg, iid),
        cfg,
        lang,
        {o["kind"]: (o["name"], o["name_en"]) for o in incident["obligations"]},
    )
    shown = card(incident, signals[iid], cfg, now, lang)
    now_picker = picker_value(now, cfg.tz)
    defaults = {
        name: {"published_at": now_picker, "held_at": now_picker} for name in ("release", "held")
    }
    done = request.query.get("done", "")
    return render(
        request,
        "incident.html",
        {
            "i": shown,
            "incident": incident,
            "facts": _facts(incident, cfg, lang),
            "recorded": _recorded(found, cfg, lang),
            "forms": _forms(incident, found, cfg, lang) if incident["status"] == "active" else {},
            "errors": errors or {},
            "values": {**defaults, **(values or {})},
            "key": form_key(),
            "timeline": events,
            "done": pick(lang, *DONE[done]) if done in DONE else "",
            "restored": restored,
            "live": live_attrs(request, f"/live.json?incident={iid}", stamp([incident], signals)),
        },
        status=status,
        user=user,
    )


def _facts(incident: dict[str, Any], cfg: Config, lang: str) -> list[tuple[str, str]]:
    def at(value: str | None) -> str:
        return show(datetime.fromisoformat(value), cfg.tz) if value else ""

    rows = [
        (pick(lang, "发生时间", "Occurred"), at(incident["occurred_at"])),
        (pick(lang, "申报时间", "Declared"), at(incident["declared_at"])),
    ]
    if incident["learned_at"]:
        rows.append((pick(lang, "获知时间", "Learned"), at(incident["learned_at"])))
    rows.append((pick(lang, "牵头单位", "Lead unit"), unit_words(cfg, incident["lead_unit"], lang)))
    if incident["co_units"]:
        rows.append(
            (
                pick(lang, "协办单位", "Other units"),
                pick(lang, "、", ", ").join(unit_words(cfg, u, lang) for u in incident["co_units"]),
            )
        )
    if incident["location"]:
        rows.append((pick(lang, "地点", "Location"), incident["location"]))
    rows.append(
        (pick(lang, "申报人", "Declared by"), incident["declared_by"].removeprefix("user:"))
    )
    if incident["status"] == "closed":
        rows.append(
            (
                pick(lang, "结束", "Closed"),
                f"{at(incident['closed_at'])} — {incident['close_reason'] or ''}",
            )
        )
    return rows


async def incident_page(request: web.Request) -> web.Response:
    user = await who_is_signed_in(request)
    kept = take_kept(request, user)  # typed before signing in again: shown, not sent
    if kept is None:
        return await _show(request, user)
    return await _show(request, user, values={kept.form: kept.values}, restored=True)


# -- the forms ------------------------------------------------------------------------------------

Call = Callable[[Ops, str, Any, str, Once], Awaitable[Any]]


async def _record(
    request: web.Request,
    form_name: str,
    kind: type[BaseModel],
    operation: str,
    read: Callable[[Filled, Any, Config, str], dict[str, Any]],
    call: Call,
    done: str,
) -> web.Response:
    """Read the form, make the API's model of it, run the operation; on a refusal, the page
    again with the error by its field and what was typed."""
    form = await read_form(request)
    iid = _incident_id(request)
    if await session_ended(request):
        return sign_in_again(request, form, f"/incidents/{iid}", form_name)
    user = await operator(request, form)
    cfg, lang = request.app[CFG], page_language(request)
    filled = Filled(values=dict(form))
    data = model(filled, kind, read(filled, form, cfg, lang), lang)
    if data is not None:
        key = str(form.get("key", ""))[:255] or form_key()
        who = actor(user)
        once = Once.of(who, key, operation, data.model_dump(mode="json"), {"incident_id": iid})
        try:
            await call(request.app[OPS], iid, data, who, once)
        except ResponderError as e:
            if e.status == 404:
                raise
            refusal(filled, e, lang, kind.model_fields)
            return await _show(
                request, user, {form_name: filled.errors}, {form_name: filled.values}, e.status
            )
        raise web.HTTPSeeOther(f"/incidents/{iid}?done={done}")
    return await _show(
        request, user, {form_name: filled.errors}, {form_name: filled.values}, status=422
    )


def _release(filled: Filled, form: Any, cfg: Config, lang: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "url": str(form.get("url", "")).strip(),
        "text": str(form.get("text", "")),
        "checklist": {k: form.get(f"check_{k}") == "on" for k in CHECKLIST},
    }
    channels = [c.strip() for c in str(form.get("channels", "")).split(",") if c.strip()]
    if channels:
        data["channels"] = channels
    published = local_time(filled, form, "published_at", cfg.tz, lang, required=True)
    if published is not None:
        data["published_at"] = published
    return data


async def release_post(request: web.Request) -> web.Response:
    return await _record(
        request, "release", RecordRelease, "POST /incidents/{incident_id}/releases", _release,
        lambda ops, iid, d, who, once: ops.record_release(iid, d, who, "authoritative", once),
        "release",
    )  # fmt: skip


async def follow_up_post(request: web.Request) -> web.Response:
    return await _record(
        request, "follow_up", RecordRelease, "POST /incidents/{incident_id}/follow-ups", _release,
        lambda ops, iid, d, who, once: ops.record_release(iid, d, who, "follow_up", once),
        "follow_up",
    )  # fmt: skip


def _schedule(filled: Filled, form: Any, cfg: Config, lang: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        k: str(form.get(k, "")).strip() for k in ("venue", "spokesperson") if form.get(k)
    }
    at = local_time(filled, form, "scheduled_at", cfg.tz, lang, required=True)
    if at is not None:
        data["scheduled_at"] = at
    return data


async def schedule_post(request: web.Request) -> web.Response:
    return await _record(
        request, "schedule", SchedulePressConference,
        "POST /incidents/{incident_id}/press-conferences", _schedule,
        lambda ops, iid, d, who, once: ops.schedule_press_conference(iid, d, who, once),
        "scheduled",
    )  # fmt: skip


def _reschedule(filled: Filled, form: Any, cfg: Config, lang: str) -> dict[str, Any]:
    data = _schedule(filled, form, cfg, lang)
    data["reason"] = str(form.get("reason", ""))
    return data


def _pc_id(request: web.Request) -> int:
    try:
        value = int(request.match_info["pc_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    if not 0 < value < 2**62:
        raise web.HTTPNotFound()
    return value


async def reschedule_post(request: web.Request) -> web.Response:
    pc = _pc_id(request)
    return await _record(
        request, "reschedule", ReschedulePressConference,
        "POST /incidents/{incident_id}/press-conferences/{press_conference_id}/reschedule",
        _reschedule,
        lambda ops, iid, d, who, once: ops.reschedule_press_conference(iid, pc, d, who, once),
        "rescheduled",
    )  # fmt: skip


def _held(filled: Filled, form: Any, cfg: Config, lang: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        k: str(form.get(k, "")) for k in ("venue", "spokesperson", "notes") if form.get(k)
    }
    data["principal_leader_spoke"] = form.get("principal_leader_spoke") == "on"
    pc = str(form.get("press_conference_id", ""))
    if pc.isdigit():
        data["press_conference_id"] = int(pc)
    at = local_time(filled, form, "held_at", cfg.tz, lang, required=True)
    if at is not None:
        data["held_at"] = at
    return data


async def held_post(request: web.Request) -> web.Response:
    return await _record(
        request, "held", PressConferenceHeld,
        "POST /incidents/{incident_id}/press-conferences/held", _held,
        lambda ops, iid, d, who, once: ops.press_conference_held(
            iid, d, who, d.press_conference_id, once
        ),
        "held",
    )  # fmt: skip


def _level(filled: Filled, form: Any, cfg: Config, lang: str) -> dict[str, Any]:
    return {k: str(form.get(k, "")) for k in ("level", "reason") if form.get(k)}


async def level_post(request: web.Request) -> web.Response:
    return await _record(
        request, "level", ChangeLevel, "POST /incidents/{incident_id}/level", _level,
        lambda ops, iid, d, who, once: ops.change_level(iid, d, who, once),
        "level",
    )  # fmt: skip


def _close(filled: Filled, form: Any, cfg: Config, lang: str) -> dict[str, Any]:
    return {"reason": str(form.get("reason", ""))} if form.get("reason") else {}


async def close_post(request: web.Request) -> web.Response:
    return await _record(
        request, "close", CloseIncident, "POST /incidents/{incident_id}/close", _close,
        lambda ops, iid, d, who, once: ops.close(iid, d, who, once),
        "closed",
    )  # fmt: skip


def setup(app: web.Application) -> None:
    base = "/incidents/{incident_id}"
    app.router.add_get(base, incident_page)
    app.router.add_post(base + "/release", release_post)
    app.router.add_post(base + "/follow-up", follow_up_post)
    app.router.add_post(base + "/press-conference", schedule_post)
    app.router.add_post(base + "/press-conference/{pc_id}/reschedule", reschedule_post)
    app.router.add_post(base + "/press-conference/held", held_post)
    app.router.add_post(base + "/level", level_post)
    app.router.add_post(base + "/close", close_post)
