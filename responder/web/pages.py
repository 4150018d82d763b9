"""Pages: login, acknowledgement, the development inbox, and errors.

Jinja2 with autoescaping on: whatever a user typed is shown as text, never run.  No inline
script or style (the CSP forbids both); every form carries the CSRF token of the session, and
the sign-in form, shown before there is one, a login token (see ``security.login_token``).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from responder import ack, auth, queries
from responder.config import Config
from responder.errors import ResponderError
from responder.paths import templates_dir
from responder.policy.rules import LEVEL_NAMES
from responder.timeutil import format_duration, from_db, show
from responder.web.identity import identify
from responder.web.keys import CFG, CLOCK, DB, SECRET
from responder.web.security import (
    COOKIE,
    LOGIN_COOKIE,
    SESSION_SECONDS,
    LoginLimiter,
    client_address,
    is_nonce,
    login_nonce,
    login_token,
    make_session,
    same,
    set_login_cookie,
    set_session_cookie,
)

TEMPLATES = templates_dir() / "pages"
ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True)
)
LIMITER = web.AppKey("login_limiter", LoginLimiter)


def render_page(name: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    html = ENV.get_template(name).render(**ctx)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


# -- acknowledgement --------------------------------------------------------------------------


def _ack_ctx(request: web.Request, row: Any) -> dict[str, Any]:
    cfg = request.app[CFG]
    person = cfg.person(row["person_id"])
    service_alert = row["kind"] == "watchdog"  # about the service itself, for administrators
    said = json.loads(row["context"] or "{}") if service_alert else {}
    return {
        "title": row["title"] or "系统告警 Service alert",
        "service_alert": service_alert,
        "action": said.get("action", ""),
        "action_en": said.get("action_en", ""),
        "level": row["level"],
        "level_name": LEVEL_NAMES.get(row["level"], "") if row["level"] else "",
        "drill": bool(row["drill"]),
        "obligation": row["obligation_name"],
        "obligation_en": row["obligation_name_en"],
        "deadline": show(from_db(row["deadline"]), cfg.tz) if row["deadline"] else "",
        "person": person.name if person else row["person_id"],
        "acked_at": show(from_db(row["acked_at"]), cfg.tz) if row["acked_at"] else "",
        "settled": _settled(row, cfg),
    }


def _settled(row: Any, cfg: Config) -> tuple[str, str] | None:
    """Whether there is nothing left to do about what the link's message said (zh, en): a
    recipient opening it hours later must not be told to hurry for a duty already done."""
    if row["incident_status"] == "closed":
        return "事件已结束,无需再处理此提醒。", "The incident is closed: nothing more to do."
    if row["obligation_status"] == "waived":
        return "此事项已免除,无需再处理。", "This duty was waived: nothing more to do."
    if row["obligation_met_at"]:
        at = show(from_db(row["obligation_met_at"]), cfg.tz)
        return (
            f"此事项已于 {at} 完成,无需再处理。",
            f"This duty was done at {at}: nothing more to do.",
        )
    return None


async def ack_page(request: web.Request) -> web.Response:
    """GET shows what is acknowledged and a button; it never acknowledges (link previews)."""
    row = await ack.find(request.app[DB], request.match_info["token"])
    return render_page("ack.html", _ack_ctx(request, row))


async def ack_post(request: web.Request) -> web.Response:
    row, fresh = await ack.acknowledge(
        request.app[DB], request.app[CLOCK], request.match_info["token"]
    )
    return render_page("ack_done.html", {**_ack_ctx(request, row), "fresh": fresh})


# -- login ------------------------------------------------------------------------------------


class StaleForm(ResponderError):
    """A page's form whose CSRF token is not the session's (an old tab, or another site)."""

    status = 403


async def read_form(request: web.Request) -> Any:
    try:
        return await request.post()
    # Our forms are UTF-8 and url-encoded; something else sent this: not UTF-8, a charset
    # Python does not know (LookupError), multipart without its boundary or a field's name,
    # bad base64 in a part (binascii.Error is a ValueError).
    except (ValueError, LookupError):
        raise ResponderError(
            "bad_form",
            "表单内容无法读取(不是本站页面以 UTF-8 提交的表单),请刷新页面后重新提交",
            "the form cannot be read (not one of our pages' UTF-8 forms); reload the page and"
            " submit it again",
        ) from None


def login_form(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    """The sign-in page, its form carrying the login token for this browser's nonce."""
    nonce = login_nonce(request.cookies.get(LOGIN_COOKIE))
    csrf = login_token(request.app[SECRET], nonce)
    response = render_page("login.html", {"error": error, "csrf": csrf}, status=status)
    set_login_cookie(response, nonce, request.app[CFG].service.public_url.startswith("https"))
    return response


async def login_page(request: web.Request) -> web.Response:
    return login_form(request)


async def login_post(request: web.Request) -> web.Response:
    form = await read_form(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    expected = login_token(request.app[SECRET], nonce) if is_nonce(nonce) else ""
    if not same(form.get("csrf"), expected):
        # Not a sign-in from our own page (another site's form, or cookies blocked): nothing
        # is checked or counted.  The page shown carries a valid form: type again and go.
        return login_form(
            request,
            "登录表单已失效,请重新输入用户名和密码(若仍不行,请允许本网站使用 Cookie)"
            " / this sign-in form is no longer valid: enter your username and password again"
            " (if it keeps happening, allow cookies for this site)",
            status=403,
        )
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))[:200]
    client = client_address(request, request.app[CFG].service.trusted_proxies)
    limiter = request.app[LIMITER]
    wait = limiter.blocked(client, username)
    if wait:  # the form again, saying how long to wait: nothing to do but wait or call
        minutes = max(1, math.ceil(wait / 60))
        response = login_form(
            request,
            f"尝试次数过多,请 {minutes} 分钟后再试;如有急事,请联系管理员"
            f" / too many attempts: try again in {minutes} min, or call an administrator",
            status=429,
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    row = await auth.login_user(request.app[DB], username)
    # scrypt takes ~0.1 s of CPU: off the event loop, so logins never stall the engine.
    ok = await asyncio.to_thread(
        auth.verify_password, password, row["password_hash"] if row else None
    )
    if row is None or not ok:
        limiter.fail(client, username)
        return login_form(request, "用户名或密码不正确 / wrong username or password", status=401)
    value, _csrf, sid = make_session(request.app[SECRET], row["id"], time.time())
    lasts = timedelta(seconds=SESSION_SECONDS)
    await auth.start_session(request.app[DB], sid, row["id"], request.app[CLOCK].now(), lasts)
    response = web.HTTPSeeOther("/")
    set_session_cookie(response, value, request.app[CFG].service.public_url.startswith("https"))
    raise response


async def logout_post(request: web.Request) -> web.Response:
    user = await identify(request)
    form = await read_form(request)
    if user is None or "sid" not in user:  # signed out already (another tab, or it expired)
        raise web.HTTPSeeOther("/login")
    if not same(form.get("csrf"), user.get("csrf") or ""):
        raise StaleForm(
            "stale_form",
            "此页面已过期,请刷新后再退出登录",
            "this page is out of date: reload it and sign out again",
        )
    sid = user["sid"]  # the cookie, even if kept, no longer works
    await auth.end_session(request.app[DB], sid)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


BOARD_SIZE = 100  # incidents on the start page, the most urgent first


def _duty(o: dict[str, Any], cfg: Config, now: datetime) -> dict[str, Any]:
    """One obligation as the duty officer reads it: its deadline to the minute, and where it
    stands in words — time left, overdue by how long, done, or waived."""
    deadline = datetime.fromisoformat(o["deadline"])
    met = datetime.fromisoformat(o["met_at"]) if o["met_at"] else None
    if o["status"] == "waived":
        state, zh, en = "waived", "已免除", "waived"
    elif met is not None:
        late = o["status"] == "breached"
        state = "late" if late else "met"
        zh = f"{'超时后' if late else ''}已于 {show(met, cfg.tz)} 完成"
        en = f"done {'late, ' if late else ''}at {show(met, cfg.tz)}"
    elif deadline > now:
        left = deadline - now
        state, zh, en = (
            "open",
            f"剩余 {format_duration(left)}",
            f"{format_duration(left, 'en')} left",
        )
    else:
        over = now - deadline
        state = "breached"
        zh, en = f"已超时 {format_duration(over)}", f"overdue by {format_duration(over, 'en')}"
    return {
        "name": o["name"],
        "name_en": o["name_en"],
        "deadline": show(deadline, cfg.tz),
        "state": state,
        "zh": zh,
        "en": en,
        "recorded_late": o["recorded_late"],
    }


def _card(i: dict[str, Any], cfg: Config, now: datetime) -> dict[str, Any]:
    unit = cfg.unit(i["lead_unit"])
    return {
        "id": i["id"],
        "title": i["title"],
        "drill": i["drill"],
        "level": i["level"],
        "level_name": i["level_name"],
        "occurred": show(datetime.fromisoformat(i["occurred_at"]), cfg.tz),
        "lead_unit": unit.name if unit else i["lead_unit"],  # by name, as people know it
        "duties": [_duty(o, cfg, now) for o in i["obligations"]],
    }


async def index(request: web.Request) -> web.Response:
    user = await identify(request)
    if user is None or "csrf" not in user:
        raise web.HTTPSeeOther("/login")
    cfg = request.app[CFG]
    now = request.app[CLOCK].now()
    active = await queries.most_urgent(request.app[DB], cfg, BOARD_SIZE)
    return render_page(
        "index.html",
        {
            "user": user,
            "incidents": [_card(i, cfg, now) for i in active["items"]],
            "total": active["total"],
            "now": show(now, cfg.tz),
        },
    )


def setup(app: web.Application) -> None:
    app[LIMITER] = LoginLimiter()
    app.router.add_get("/", index)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", logout_post)
    app.router.add_get("/ack/{token}", ack_page)
    app.router.add_post("/ack/{token}", ack_post)
    app.router.add_static("/static", Path(__file__).parent / "static")
