"""Who is asking: an API bearer token, or a page login session.  And may they?

The API takes bearer tokens only: a browser's session cookie is never enough to change
anything through it, so a page elsewhere cannot make a logged-in browser write (no CSRF).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from responder import auth
from responder.errors import ResponderError
from responder.timeutil import iso_local, show
from responder.web.keys import CFG, CLOCK, DB, SECRET, request_key
from responder.web.security import COOKIE, read_session

IDENTITY = request_key("identity", object)
_TOKEN = re.compile(r"[!-~]{1,200}")


class Unauthorized(ResponderError):
    status = 401


class Forbidden(ResponderError):
    status = 403


class TwoCredentials(ResponderError):
    status = 400


async def identify(request: web.Request) -> dict[str, Any] | None:
    if IDENTITY in request:
        return request[IDENTITY]
    user = None
    if len(request.headers.getall("Authorization", [])) > 1:  # which one is meant? (as for
        raise TwoCredentials(  # a field or query parameter given twice)
            "bad_request",
            "请求中有多个 Authorization 头,只能有一个",
            "the request has more than one Authorization header; send one",
        )
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        # Ours are printable ASCII; anything else (bytes that were not UTF-8 included) is
        # simply not a token we know, and must not reach the hashing of it.
        if scheme.lower() == "bearer" and _TOKEN.fullmatch(token.strip()):
            try:
                user = await auth.user_for_token(
                    request.app[DB], token.strip(), request.app[CLOCK].now()
                )
            except auth.TokenExpired as e:
                # Told apart from a bad token: an integration that stops at night must say
                # why, so that whoever is on call asks for a new token, not for a debugger.
                raise Unauthorized(
                    "token_expired",
                    f"令牌已于 {show(e.expired_at, request.app[CFG].tz)} 过期;"
                    "请管理员用 responder token create 创建新令牌",
                    f"the token expired at {show(e.expired_at, request.app[CFG].tz)};"
                    " ask an administrator for a new one (responder token create)",
                    {"expired_at": iso_local(e.expired_at, request.app[CFG].tz)},
                ) from None
    elif not request.path.startswith("/api/"):
        session = read_session(request.app[SECRET], request.cookies.get(COOKIE))
        if session is not None:
            row = await auth.user_for_session(
                request.app[DB], str(session.get("sid")), session.get("u"), request.app[CLOCK].now()
            )
            if row is not None:
                user = {**row, "csrf": session.get("csrf"), "sid": session.get("sid")}
    request[IDENTITY] = user
    return user


async def require(request: web.Request, roles: tuple[str, ...]) -> dict[str, Any]:
    """The caller, if their role is among ``roles``; else 401 (who are you?) or 403 (not you)."""
    user = await identify(request)
    if user is None:
        raise Unauthorized(
            "unauthorized",
            "需要有效的令牌(Authorization: Bearer …)",
            "a valid bearer token is required (Authorization: Bearer …)",
        )
    if user["role"] not in roles:
        raise Forbidden(
            "forbidden",
            f"角色 {user['role']} 无权执行此操作",
            f"role {user['role']} may not do this",
        )
    return user


def actor(user: dict[str, Any]) -> str:
    return f"user:{user['username']}"
