"""What every page shares: one language per page, who is signed in, forms and their CSRF token,
and rendering through ``templates/pages/base.html``.

Language.  Chinese unless the person chose English with the switch in the header (a cookie,
kept a year) or, before any choice, their browser asks for English before Chinese
(``Accept-Language``).  A page is in one language: templates write every text as
``{{ t("中文", "English") }}`` and the helper picks the page's.  Messages that arrive as a pair
(a :class:`~responder.errors.ResponderError`'s ``zh``/``en``) are picked with :func:`pick`.

Sessions.  A page asks :func:`signed_in` for its visitor: an anonymous one is sent to the sign-in
page with the path it was going to (``/login?next=/incidents/…``) and comes back there after
signing in — only to a path on this site (:func:`same_site_path`).  A page that changes
anything takes :func:`operator`: a duty officer or an administrator, with the form's CSRF token
(the session's, see ``security.make_session``).  Viewers and reviewers read every page and see
no forms; a POST from them is refused (403) before anything is read from it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup, escape

from responder.errors import ResponderError
from responder.paths import templates_dir
from responder.timeutil import local
from responder.web.identity import identify
from responder.web.keys import CFG
from responder.web.routing import OPERATE
from responder.web.security import same

LANG_COOKIE = "responder_lang"
LANGS = ("zh", "en")
LANG_SECONDS = 365 * 86400
ROLE_NAMES = {
    "viewer": ("查看者", "viewer"),
    "reviewer": ("审核人", "reviewer"),
    "duty_officer": ("值班员", "duty officer"),
    "admin": ("管理员", "administrator"),
}


@pass_context
def _t(ctx: Context, zh: str, en: str) -> str:
    """The text in the page's language (``lang`` in the template's context)."""
    return en if ctx.get("lang") == "en" else zh


ENV = Environment(
    loader=FileSystemLoader(str(templates_dir() / "pages")),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.globals["t"] = _t
_LINK = re.compile(r"https?://[^\s<>\"'()（）,，。;；]+")


def linkify(text: str) -> Markup:
    """Text with its web addresses made links (the development inbox: a message's
    acknowledgement link opens with a click); everything else escaped."""
    out, at = [], 0
    for m in _LINK.finditer(text):
        out += [escape(text[at : m.start()]), Markup('<a href="{0}">{0}</a>').format(m.group())]
        at = m.end()
    out.append(escape(text[at:]))
    return Markup("").join(out)


ENV.filters["linkify"] = linkify


def pick(lang: str, zh: str, en: str) -> str:
    return en if lang == "en" else zh


def page_language(request: web.Request) -> str:
    """The page's language: the person's choice (cookie), else the first of Chinese and
    English that the browser lists (by its q-values), else Chinese."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGS:
        return str(chosen)
    best, best_q = "zh", 0.0
    for item in request.headers.get("Accept-Language", "")[:500].split(","):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGS:
            continue
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:  # the first listed wins a tie
            best, best_q = primary, q
    return best


def same_site_path(value: object) -> str | None:
    """``value`` if it is a path on this site ("/incidents/INC-1?x=1"), else None.  Never
    another site (``//evil.example``, ``https://…``, ``/\\evil.example``) or a header break."""
    if not isinstance(value, str) or not 0 < len(value) <= 500:
        return None
    if not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if any(c < " " or c == "\x7f" or c == "\\" for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def render_page(name: str, ctx: Mapping[str, Any], status: int = 200) -> web.Response:
    """A page from ``templates/pages``; ``ctx`` should give ``lang`` (Chinese otherwise)."""
    html = ENV.get_template(name).render(**{"lang": "zh", **ctx})
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def render(
    request: web.Request,
    name: str,
    ctx: Mapping[str, Any],
    status: int = 200,
    user: Mapping[str, Any] | None = None,
) -> web.Response:
    """A page for this request: in its language, with the header for ``user``."""
    return render_page(
        name,
        {
            "lang": page_language(request),
            "path": request.rel_url.path_qs,
            "user": user,
            "can_operate": bool(user and user.get("role") in OPERATE),
            "role_name": ROLE_NAMES.get(str(user.get("role")), ("", "")) if user else ("", ""),
            **ctx,
        },
        status,
    )


def seconds(dt: datetime | None, request: web.Request) -> str:
    """A time as a person reads it in a timeline: local, to the second, no microseconds."""
    if dt is None:
        return "—"
    return local(dt, request.app[CFG].tz).strftime("%Y-%m-%d %H:%M:%S")


# -- who is asking -------------------------------------------------------------------------------


class StaleForm(ResponderError):
    """A page's form whose CSRF token is not the session's (an old tab, or another site)."""

    status = 403


class PageForbidden(ResponderError):
    status = 403


async def signed_in(request: web.Request) -> dict[str, Any]:
    """The signed-in visitor (a page session, never an API token); anyone else is sent to sign
    in, and brought back here afterwards."""
    user = await identify(request)
    if user is None or "csrf" not in user:
        back = request.rel_url.path_qs if request.method == "GET" else "/"
        target = "/login" if back == "/" else "/login?next=" + quote(back, safe="/")
        raise web.HTTPSeeOther(target)
    return user


async def operator(request: web.Request, form: Mapping[str, Any]) -> dict[str, Any]:
    """The signed-in duty officer or administrator who sent ``form`` from our own page."""
    user = await signed_in(request)
    if user["role"] not in OPERATE:
        raise PageForbidden(
            "forbidden",
            "您的角色只能查看,不能修改;如需操作,请联系管理员",
            "your role can read but not change anything; ask an administrator",
        )
    check_csrf(user, form)
    return user


def check_csrf(user: Mapping[str, Any], form: Mapping[str, Any]) -> None:
    if not same(form.get("csrf"), str(user.get("csrf") or "")):
        raise StaleForm(
            "stale_form",
            "此页面已过期,请刷新页面后重新提交",
            "this page is out of date: reload it and submit again",
        )


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


def form_key() -> str:
    """A new idempotency key for a form that changes something: sent twice (a double click,
    a reload that posts again), the change is made once."""
    return "page-" + secrets.token_urlsafe(18)


# -- the language switch --------------------------------------------------------------------------


async def switch_language(request: web.Request) -> web.Response:
    """``GET /lang/en?next=/path``: keep the choice and go back to the page."""
    lang = request.match_info["lang"]
    if lang not in LANGS:
        raise web.HTTPNotFound()
    response = web.HTTPSeeOther(same_site_path(request.query.get("next")) or "/")
    response.set_cookie(
        LANG_COOKIE,
        lang,
        max_age=LANG_SECONDS,
        httponly=True,
        samesite="Lax",
        secure=request.app[CFG].service.public_url.startswith("https"),
        path="/",
    )
    raise response
