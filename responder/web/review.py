"""The reviewers' pages: the records (newest first, filtered by unit, quarter and state), one
record with its evidence and the decision form, and the reports.

The same rules as every page: a login session, the CSRF token of the session on every form,
no inline script or style, and one language per page (``layout.t``): the data layer carries
each text in Chinese and English (``obligation_name``/``obligation_name_en``, ``what``/
``what_en``, ``grounds``/``grounds_en``…) and the page picks its own.  Deciding is for reviewers and administrators; anyone signed in
may read.  The work is done by the service layer (``Ops``) as for the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from responder.accountability import Decide
from responder.config import MEASURES
from responder.errors import BadInput, ResponderError
from responder.reports import records, render
from responder.web import layout
from responder.web.console import level_words
from responder.web.identity import Forbidden, actor
from responder.web.keys import CFG, CLOCK, DB, OPS
from responder.web.pages import StaleForm, read_form
from responder.web.routing import REVIEW
from responder.web.security import same

STATES = {"open": ("待决定", "open"), "decided": ("已决定", "decided")}
_signed_in = layout.signed_in  # and back to this page after signing in


def _problems(e: ValidationError, lang: str) -> str:
    """A form's problems in the page's language: our rules say each as "中文 / English"."""
    said = []
    for err in e.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        zh, sep, en = msg.partition(" / ")
        said.append(layout.pick(lang, zh, en) if sep else msg)
    return "; ".join(said)


def _record_id(request: web.Request) -> int:
    value = request.match_info["record_id"]
    if not value.isdigit() or not 0 < int(value) < 2**62:
        raise BadInput("bad_id", "记录编号必须是数字", "a record id is a number")
    return int(value)


async def record_list(request: web.Request) -> web.Response:
    user = await _signed_in(request)
    cfg = request.app[CFG]
    q = request.query
    unit = q.get("unit", "")[:64] or None
    quarter = q.get("quarter", "")[:16] or None
    state = q.get("state") if q.get("state") in STATES else None
    now = request.app[CLOCK].now()
    items = await records.record_list(
        request.app[DB], cfg, now, unit=unit, quarter=quarter, state=state
    )
    local = now.astimezone(cfg.tz)
    this_q = (local.month - 1) // 3 + 1
    last = (local.year, this_q - 1) if this_q > 1 else (local.year - 1, 4)
    return layout.render(
        request,
        "review/list.html",
        {
            "items": items,
            "units": cfg.units,
            "states": STATES,
            "f": {"unit": unit or "", "quarter": quarter or "", "state": state or ""},
            "last_quarter": {"year": last[0], "quarter": last[1]},
        },
        user=user,
    )


async def _record_page(
    request: web.Request, user: dict[str, Any], rid: int, error: str = "", status: int = 200
) -> web.Response:
    view = await records.record_file(
        request.app[DB], request.app[CFG], rid, request.app[CLOCK].now()
    )
    return layout.render(
        request,
        "review/record.html",
        {
            "r": view,
            "may_decide": user["role"] in REVIEW,
            "measures": {k: v for k, v in MEASURES.items() if k != "exempt"},
            "level": level_words(view["incident_level"], layout.page_language(request)),
            "current": next((d for d in view["decisions"] if d["current"]), None),
            "error": error,
        },
        status=status,
        user=user,
    )


async def record_page(request: web.Request) -> web.Response:
    user = await _signed_in(request)
    return await _record_page(request, user, _record_id(request))


def _decision(form: Any, cfg: Any) -> Decide:
    """The form as the API's body: empty fields left out; a local date and time (the
    browser's datetime-local) taken in the configured zone."""
    data: dict[str, Any] = {"action": form.get("action", "")}
    for key in ("measure", "reason", "correction_required", "corrects"):
        if form.get(key):
            data[key] = form[key]
    if data.get("action") != "change":
        data.pop("measure", None)
    if "corrects" in data:
        data["corrects"] = int(data["corrects"]) if str(data["corrects"]).isdigit() else -1
    if form.get("correction_due_at"):
        try:
            local = datetime.fromisoformat(str(form["correction_due_at"]))
        except ValueError:
            local = None
        data["correction_due_at"] = (
            local.replace(tzinfo=cfg.tz) if local and not local.tzinfo else "x"
        )
    return Decide.model_validate(data)


async def decide(request: web.Request) -> web.Response:
    user = await _signed_in(request)
    rid = _record_id(request)
    if user["role"] not in REVIEW:
        raise Forbidden(
            "forbidden",
            f"角色 {user['role']} 无权作出问责决定",
            f"role {user['role']} may not decide",
        )
    form = await read_form(request)
    if not same(form.get("csrf"), user.get("csrf") or ""):
        raise StaleForm(
            "stale_form", "此页面已过期,请刷新后重新提交", "this page is out of date: reload it"
        )
    try:
        data = _decision(form, request.app[CFG])
        await request.app[OPS].decide(rid, data, actor(user))
    except ValidationError as e:
        problems = _problems(e, layout.page_language(request))
        return await _record_page(request, user, rid, problems, status=422)
    except ResponderError as e:
        if e.status == 404:
            raise
        said = layout.pick(layout.page_language(request), e.zh, e.en)
        return await _record_page(request, user, rid, said, status=e.status)
    raise web.HTTPSeeOther(f"/review/records/{rid}")


async def incident_report(request: web.Request) -> web.Response:
    user = await _signed_in(request)
    report = await render.incident_report(
        request.app[OPS], request.match_info["incident_id"][:64], actor(user)
    )
    return _html(render.render(report, "html", standalone=False))


async def quarterly_report(request: web.Request) -> web.Response:
    user = await _signed_in(request)
    year, quarter = records.parse_quarter(request.match_info["quarter"])
    report = await render.quarterly_report(request.app[OPS], year, quarter, actor(user))
    return _html(render.render(report, "html", standalone=False))


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8")


def setup(app: web.Application) -> None:
    app.router.add_get("/review", record_list)
    app.router.add_get("/review/records/{record_id}", record_page)
    app.router.add_post("/review/records/{record_id}/decide", decide)
    app.router.add_get("/review/reports/incidents/{incident_id}", incident_report)
    app.router.add_get("/review/reports/quarterly/{quarter}", quarterly_report)
