"""Pages: sign-in and sign-out, acknowledgement links, the language switch.

The duty officer's console (the dashboard, declaring, an incident, people and rules) is in
:mod:`responder.web.console`, :mod:`responder.web.declare`, :mod:`responder.web.incident_page`
and :mod:`responder.web.directory`; what all pages share (language, sessions, forms, rendering)
in :mod:`responder.web.layout`.

Jinja2 with autoescaping on: whatever a user typed is shown as text, never run.  No inline
script or style (the CSP forbids both); every form carries the CSRF token of the session, and
the sign-in form, shown before there is one, a login token (see ``security.login_token``).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from responder import ack, auth
from responder.config import Config
from responder.obligations import CORRECTION
from responder.policy.rules import LEVEL_NAMES
from responder.timeutil import format_duration, from_db, show
from responder.web.forms import (
    KEEP_PREFIX,
    KEPT,
    KeptForm,
    KeptForms,
    from_our_pages,
    kept_form,
    kept_values,
)
from responder.web.identity import identify
from responder.web.keys import CFG, CLOCK, DB, SECRET
from responder.web.layout import (
    LANG_COOKIE,
    LANGS,
    StaleForm,
    page_language,
    pick,
    read_form,
    render,
    render_page,
    same_site_path,
    switch_language,
)
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

__all__ = ["render_page", "setup"]  # render_page: the error pages and the dev inbox use it
LIMITER = web.AppKey("login_limiter", LoginLimiter)


# -- acknowledgement --------------------------------------------------------------------------


def _ack_lang(request: web.Request, person: Any) -> str:
    """The language the person chose on our pages (the switch), else the one their messages
    are written in: the page goes on from the message that linked to it."""
    if request.cookies.get(LANG_COOKIE) in LANGS:
        return page_language(request)
    return person.language if person is not None else page_language(request)


def _ack_ctx(request: web.Request, row: Any) -> dict[str, Any]:
    cfg = request.app[CFG]
    person = cfg.person(row["person_id"])
    lang = _ack_lang(request, person)
    service_alert = row["kind"] == "watchdog"  # about the service itself, for administrators
    said = json.loads(row["context"] or "{}") if service_alert else {}
    level = row["level"]
    settled = _settled(row, cfg)
    return {
        "lang": lang,
        "path": request.rel_url.path,
        "title": row["title"] or pick(lang, "系统告警", "Service alert"),
        "service_alert": service_alert,
        "action": pick(lang, said.get("action", ""), said.get("action_en", "")),
        "level": pick(lang, f"{level}级({LEVEL_NAMES[level]})", f"level {level}") if level else "",
        "drill": bool(row["drill"]),
        "obligation": pick(lang, row["obligation_name"] or "", row["obligation_name_en"] or ""),
        "deadline": show(from_db(row["deadline"]), cfg.tz) if row["deadline"] else "",
        # The other duties the same message told of: acknowledged with it.
        "also": [
            {
                "obligation": pick(lang, c["name"], c["name_en"]),
                "deadline": show(from_db(c["deadline"]), cfg.tz),
            }
            for c in row.get("carries", [])
        ],
        "person": person.name if person else row["person_id"],
        "acked_at": show(from_db(row["acked_at"]), cfg.tz) if row["acked_at"] else "",
        "settled": pick(lang, *settled) if settled else "",
        "overdue": "" if settled else _overdue(request, row, lang),
        "still_open": "" if settled else _correction_open(request, row, lang),
    }


def _overdue(request: web.Request, row: Any, lang: str) -> str:
    """For a duty still to be done past its deadline: that it is overdue, and by how long."""
    deadline = from_db(row["deadline"])
    now = request.app[CLOCK].now()
    if deadline is None or deadline >= now:
        return ""
    over = now - deadline
    return pick(
        lang,
        f"此事项已超时 {format_duration(over)},尚未完成,请立即处理。",
        f"This duty is overdue by {format_duration(over, 'en')} and not yet done: act now.",
    )


def _settled(row: Any, cfg: Config) -> tuple[str, str] | None:
    """Whether there is nothing left to do about what the link's message said (zh, en): a
    recipient opening it hours later must not be told to hurry for a duty already done.
    A correction (限期整改) runs on after its incident closed: only its report, or its
    withdrawal, settles it."""
    if row["incident_status"] == "closed" and row["obligation_kind"] != CORRECTION:
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


def _correction_open(request: web.Request, row: Any, lang: str) -> str:
    """For a correction still running (before its deadline): that it is open, and until when,
    though the incident may be over."""
    deadline = from_db(row["deadline"])
    if row["obligation_kind"] != CORRECTION or deadline is None:
        return ""
    if deadline < request.app[CLOCK].now():
        return ""  # overdue: said by _overdue
    due = show(deadline, request.app[CFG].tz)
    closed = row["incident_status"] == "closed"
    return pick(
        lang,
        ("事件虽已结束,但" if closed else "") + f"整改尚未完成:请在 {due} 前提交整改报告。",
        ("The incident is closed, but the" if closed else "The")
        + f" correction is still open: send the correction report by {due}.",
    )


async def ack_page(request: web.Request) -> web.Response:
    """GET shows what is acknowledged and a button; it never acknowledges (link previews)."""
    row = await ack.find(request.app[DB], request.match_info["token"])
    return render_page("ack.html", _ack_ctx(request, row))


async def ack_post(request: web.Request) -> web.Response:
    row, fresh = await ack.acknowledge(
        request.app[DB], request.app[CLOCK], request.match_info["token"]
    )
    return render_page("ack_done.html", {**_ack_ctx(request, row), "fresh": fresh})


# -- sign in and out --------------------------------------------------------------------------


def login_form(
    request: web.Request,
    error: tuple[str, str] | None = None,
    status: int = 200,
    kept: KeptForm | None = None,
    back: str | None = None,
) -> web.Response:
    """The sign-in page, its form carrying the login token for this browser's nonce, the
    same-site path to go back to, and what was typed in a form the visitor is going back to."""
    nonce = login_nonce(request.cookies.get(LOGIN_COOKIE))
    csrf = login_token(request.app[SECRET], nonce)
    lang = page_language(request)
    back = kept.page if kept else back or same_site_path(request.query.get("next")) or ""
    response = render(
        request,
        "login.html",
        {
            "error": pick(lang, *error) if error else "",
            "csrf": csrf,
            "next": back,
            "kept": kept,
            "kept_prefix": KEEP_PREFIX,
        },
        status=status,
    )
    set_login_cookie(response, nonce, request.app[CFG].service.public_url.startswith("https"))
    return response


async def login_page(request: web.Request) -> web.Response:
    return login_form(request)


SESSION_ENDED = ("登录已过期,请重新登录", "Your session has ended: sign in again")
SESSION_ENDED_KEPT = (
    "登录已过期,请重新登录;您填写的内容已保留",
    "Your session has ended: sign in again. What you typed is kept",
)


def sign_in_again(request: web.Request, form: Any, page: str, form_name: str) -> web.Response:
    """The answer to a console form posted after its session ended: the sign-in page, keeping
    what was typed (sent from our own pages only) for ``form_name`` on ``page``, where it is
    shown again once signed in.  Nothing of the form is acted on."""
    values = kept_values(form) if from_our_pages(request) else {}
    kept = kept_form(page, form_name, values) if values else None
    said = SESSION_ENDED_KEPT if kept else SESSION_ENDED
    return login_form(request, said, status=401, kept=kept, back=page)


def _carried(form: Any) -> KeptForm | None:
    """The typed form the sign-in page carried through, if it did (and still fits)."""
    values = kept_values(form, KEEP_PREFIX)
    return kept_form(form.get("next"), form.get("kept_form"), values) if values else None


async def login_post(request: web.Request) -> web.Response:
    form = await read_form(request)
    kept = _carried(form)
    back = same_site_path(form.get("next"))
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    expected = login_token(request.app[SECRET], nonce) if is_nonce(nonce) else ""
    if not same(form.get("csrf"), expected):
        # Not a sign-in from our own page (another site's form, or cookies blocked): nothing
        # is checked or counted.  The page shown carries a valid form: type again and go.
        return login_form(
            request,
            (
                "登录表单已失效,请重新输入用户名和密码(若仍不行,请允许本网站使用 Cookie)",
                "this sign-in form is no longer valid: enter your username and password again"
                " (if it keeps happening, allow cookies for this site)",
            ),
            status=403,
            kept=kept,
            back=back,
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
            (
                f"尝试次数过多,请 {minutes} 分钟后再试;如有急事,请联系管理员",
                f"too many attempts: try again in {minutes} min, or call an administrator",
            ),
            status=429,
            kept=kept,
            back=back,
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
        return login_form(
            request,
            ("用户名或密码不正确", "wrong username or password"),
            status=401,
            kept=kept,
            back=back,
        )
    value, _csrf, sid = make_session(request.app[SECRET], row["id"], time.time())
    lasts = timedelta(seconds=SESSION_SECONDS)
    now = request.app[CLOCK].now()
    await auth.start_session(request.app[DB], sid, row["id"], now, lasts)
    if kept is not None:  # the page it was typed on shows it again, not sent
        request.app[KEPT].put(sid, kept, now)
    # Back where the visitor was going before being asked to sign in: a path on this site.
    response = web.HTTPSeeOther(back or "/")
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


def setup(app: web.Application) -> None:
    app[LIMITER] = LoginLimiter()
    app[KEPT] = KeptForms()
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", logout_post)
    app.router.add_get("/lang/{lang}", switch_language)
    app.router.add_get("/ack/{token}", ack_page)
    app.router.add_post("/ack/{token}", ack_post)
    app.router.add_static("/static", Path(__file__).parent / "static")
