"""The duty officer's dashboard (``/``) and the live view its script polls (``/live.json``).

Each obligation is shown as a duty: its absolute deadline (always: the page works without
JavaScript), a countdown (hours:minutes left; amber in the last hour; red and counting up once
overdue) and its state in words, never by colour alone.  ``static/console.js`` keeps the
countdowns running from the server's clock (never the browser's: a wrong clock on a phone must
not show a wrong time left) and polls ``/live.json`` for what changed; when the connection
drops the page says so and the countdowns go on from the last known deadlines.

The presentation here (:func:`duty`, :func:`card`) is shared with the incident page.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from responder import queries
from responder.config import Config
from responder.errors import NotFound
from responder.models import CATEGORIES
from responder.policy.rules import LEVEL_NAMES, LEVEL_NAMES_EN
from responder.timeutil import format_duration, show
from responder.views import channel_words, unit_words
from responder.web.identity import identify
from responder.web.keys import CFG, CLOCK, DB
from responder.web.layout import page_language, pick, render, signed_in

BOARD_SIZE = 100  # incidents on the dashboard, the most urgent first
POLL_MS = 10_000  # how often the page asks what changed; the countdowns tick every second
SOON = timedelta(hours=1)  # amber from here on


def level_words(level: str, lang: str) -> str:
    if lang == "en":
        return f"level {level} ({LEVEL_NAMES_EN[level]})"
    return f"{level}级({LEVEL_NAMES[level]})"


def words(lang: str) -> dict[str, Any]:
    """What the script needs to say a countdown in the page's language (as
    :func:`running` says it)."""
    return {
        "left": pick(lang, "剩余 {d}", "{d} left"),
        "soon": pick(lang, "剩余 {d} · 即将到期", "{d} left · due soon"),
        "over": pick(lang, "已超时 {d}", "overdue by {d}"),
        "units": ["d", "h", "min", "s"] if lang == "en" else ["天", "小时", "分钟", "秒"],
        "lost": pick(
            lang,
            "与服务器的连接已中断:倒计时按最后已知的时限继续,恢复后自动更新。",
            "Connection to the server lost: the countdowns go on from the last known"
            " deadlines and update when it is back.",
        ),
        "signed_out": pick(
            lang, "登录已过期,请点此重新登录。", "Your session has ended: sign in again."
        ),
        # The incident polled for is not in the database (removed, or a database restored
        # from before it): not a connection problem, and polling again will not help.
        "gone": pick(
            lang,
            "找不到此事件(可能已被删除),倒计时已停止更新。点此返回值班台",
            "This incident is not found (it may have been removed): the countdowns have"
            " stopped. Back to the dashboard",
        ),
        "changed": pick(lang, "有新的变化,点此刷新页面", "Something changed: reload the page"),
    }


def clock_text(delta: timedelta) -> str:
    """Hours:minutes left (``4:59``), or overdue by (``+1:02``); whole minutes, cut down."""
    total = int(delta.total_seconds())
    sign = "" if total > 0 else "+"
    minutes = abs(total) // 60
    return f"{sign}{minutes // 60}:{minutes % 60:02d}"


def running(left: timedelta, lang: str) -> tuple[str, str]:
    """(state, words) of a duty still to be done, ``left`` before its deadline."""
    w = words(lang)
    if left.total_seconds() > 0:
        state = "soon" if left <= SOON else "open"
        return state, w["soon" if state == "soon" else "left"].format(d=format_duration(left, lang))
    return "overdue", w["over"].format(d=format_duration(-left, lang))


def duty(o: dict[str, Any], now: datetime, lang: str, tz: ZoneInfo) -> dict[str, Any]:
    """One obligation as the duty officer reads it (``o`` as ``views.obligation_view``)."""
    deadline = datetime.fromisoformat(o["deadline"])
    met = datetime.fromisoformat(o["met_at"]) if o["met_at"] else None
    shown = {
        "id": o["id"],
        "kind": o["kind"],
        "name": pick(lang, o["name"], o["name_en"]),
        "deadline": show(deadline, tz),
        "deadline_ms": int(deadline.timestamp() * 1000),
        "clock": "",
        "live": False,
    }
    if o["status"] == "waived":
        reason = f"({o['waived_reason']})" if o["waived_reason"] else ""
        return shown | {"state": "waived", "words": pick(lang, "已免除", "waived") + reason}
    if met is not None and o["status"] == "breached":
        over = format_duration(met - deadline, lang)
        at = show(met, tz)
        return shown | {
            "state": "late",
            "words": pick(
                lang,
                f"超时完成:{at} 完成,超出时限 {over};超时记录保留,由审核人处理",
                f"done late: at {at}, {over} after the deadline; the breach stays on record"
                " for the reviewers",
            ),
        }
    if met is not None:
        at = show(met, tz)
        text = pick(lang, f"已于 {at} 按时完成", f"done in time at {at}")
        if o["recorded_late"]:
            text += pick(lang, "(时限过后才录入)", " (entered after the deadline)")
        return shown | {"state": "met", "words": text}
    state, text = running(deadline - now, lang)
    return shown | {
        "state": state,
        "words": text,
        "clock": clock_text(deadline - now),
        "live": True,
    }


def told_words(told: list[dict[str, Any]], lang: str, tz: ZoneInfo) -> str:
    """Who the latest alert reached and who acknowledged it, in a line."""
    if not told:
        return ""
    yes = [t["name"] for t in told if t["acknowledged_at"]]
    no = [t["name"] for t in told if not t["acknowledged_at"]]
    at = show(datetime.fromisoformat(told[0]["at"]), tz)[11:16]  # the hour and minute
    sep = pick(lang, "、", ", ")
    parts = []
    if yes:
        parts.append(pick(lang, "已确认:", "acknowledged: ") + sep.join(yes))
    if no:
        parts.append(pick(lang, "未确认:", "not acknowledged: ") + sep.join(no))
    head = pick(lang, f"最近提醒({at}):", f"Latest alert ({at}): ")
    return head + pick(lang, ";", "; ").join(parts)


def card(
    i: dict[str, Any], signals: dict[str, Any], cfg: Config, now: datetime, lang: str
) -> dict[str, Any]:
    """An incident as the dashboard and the incident page show it."""
    tz = cfg.tz
    duties = []
    for o in i["obligations"]:
        d = duty(o, now, lang, tz)
        d["told"] = told_words(signals["told"].get(o["id"], []), lang, tz) if d["live"] else ""
        duties.append(d)
    category = CATEGORIES.get(i["category"], (i["category"], i["category"]))
    return {
        "id": i["id"],
        "title": i["title"],
        "drill": i["drill"],
        "status": i["status"],
        "level": i["level"],
        "level_words": level_words(i["level"], lang),
        "category": pick(lang, *category),
        "occurred": show(datetime.fromisoformat(i["occurred_at"]), tz),
        "lead_unit": unit_words(cfg, i["lead_unit"], lang),
        "duties": duties,
        "failing": [
            {
                "channel": channel_words(f["channel"], lang),
                "why": pick(lang, f["error_message"] or "", f["error_message_en"] or ""),
            }
            for f in signals["failing"]
        ],
    }


def stamp(incidents: list[dict[str, Any]], signals: dict[str, Any]) -> str:
    """A short fingerprint of what a page shows beyond the ticking clocks: when the live view's
    differs, the page offers a reload."""
    seen = [
        (
            i["id"],
            i["status"],
            i["level"],
            [(o["id"], o["status"], o["met_at"]) for o in i["obligations"]],
            signals.get(i["id"], {}),
        )
        for i in incidents
    ]
    raw = json.dumps(seen, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def live_attrs(request: web.Request, source: str, fingerprint: str) -> dict[str, Any]:
    """What the page's ``data-live`` element carries for the script."""
    return {
        "source": source,
        "poll_ms": POLL_MS,
        "now_ms": int(request.app[CLOCK].now().timestamp() * 1000),
        "stamp": fingerprint,
        "words": words(page_language(request)),
    }


async def _board(request: web.Request) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    db, cfg = request.app[DB], request.app[CFG]
    active = await queries.most_urgent(db, cfg, BOARD_SIZE)
    items = active["items"]
    signals = await queries.alert_signals(db, cfg, [i["id"] for i in items])
    return items, signals, active["total"]


async def dashboard(request: web.Request) -> web.Response:
    user = await signed_in(request)
    cfg, lang = request.app[CFG], page_language(request)
    now = request.app[CLOCK].now()
    items, signals, total = await _board(request)
    return render(
        request,
        "dashboard.html",
        {
            "incidents": [card(i, signals[i["id"]], cfg, now, lang) for i in items],
            "total": total,
            "now": show(now, cfg.tz),
            "live": live_attrs(request, "/live.json", stamp(items, signals)),
        },
        user=user,
    )


async def live(request: web.Request) -> web.Response:
    """The countdowns' data, for the dashboard or (``?incident=ID``) one incident's page.  JSON
    for the page's script: 401 JSON, not a redirect, when the session has ended."""
    user = await identify(request)
    if user is None or "csrf" not in user:
        return web.json_response({"signed_in": False}, status=401)
    cfg, lang = request.app[CFG], page_language(request)
    now = request.app[CLOCK].now()
    wanted = request.query.get("incident")
    if wanted is not None:
        try:
            one = await queries.incident(request.app[DB], cfg, wanted[:64])
        except NotFound as e:  # JSON with its code, for the script to tell it from a bad URL
            return web.json_response(
                {"code": e.code, "message": e.message(lang)},
                status=404,
                dumps=lambda o: json.dumps(o, ensure_ascii=False),
            )
        items = [one]
        signals = await queries.alert_signals(request.app[DB], cfg, [one["id"]])
    else:
        items, signals, _ = await _board(request)
    duties = [duty(o, now, lang, cfg.tz) for i in items for o in i["obligations"]]
    return web.json_response(
        {
            "now_ms": int(now.timestamp() * 1000),
            "stamp": stamp(items, signals),
            "duties": [
                {k: d[k] for k in ("id", "state", "deadline_ms", "clock", "words", "live")}
                for d in duties
            ],
        },
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/", dashboard)
    app.router.add_get("/live.json", live)
