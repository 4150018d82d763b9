"""Every failure a client can cause becomes a clear 4xx; nothing it sends yields a 500.

API answers are JSON ``{"error": code, "detail": …, "message": 中文, "message_en": English}``;
pages get a readable page.  Unexpected failures are logged with a reference and answered
with a plain 500 that reveals nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import ValidationError

from responder.errors import ResponderError, Unavailable
from responder.web.access import CLIENT_CLOSED, logged_path, request_id
from responder.web.bodies import refuse_compressed

log = logging.getLogger("responder.web")

_HTTP_CODES = {
    400: ("bad_request", "请求格式不正确", "the request is malformed"),
    401: ("unauthorized", "需要登录或有效的令牌", "a valid token or login is required"),
    403: ("forbidden", "您的角色无权执行此操作", "your role may not do this"),
    404: ("not_found", "找不到该地址", "no such address"),
    405: ("method_not_allowed", "该地址不支持此请求方法", "this method is not allowed here"),
    413: ("too_large", "请求内容过大", "the request body is too large"),
    415: ("unsupported_media_type", "请以 JSON 格式提交", "send the body as JSON"),
    429: ("too_many_requests", "请求过于频繁,请稍后再试", "too many attempts; try again later"),
}


BEARER = 'Bearer realm="responder"'


def error_body(code: str, zh: str, en: str, detail: Any = None) -> dict[str, Any]:
    return {
        "error": code,
        "detail": detail if detail is not None else en,
        "message": zh,
        "message_en": en,
    }


def json_error(status: int, code: str, zh: str, en: str, detail: Any = None) -> web.Response:
    return web.json_response(
        error_body(code, zh, en, detail),
        status=status,
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


# pydantic's error types, in Chinese; ``{…}`` are filled from the error's context (its limits,
# the values allowed), never from what the client sent.
_PROBLEM_ZH = {
    "missing": "缺少此项",
    "extra_forbidden": "不认识此字段(请检查拼写)",
    "string_too_long": "太长(最多 {max_length} 个字符)",
    "string_too_short": "太短(至少 {min_length} 个字符)",
    "too_long": "太多(最多 {max_length} 项)",
    "too_short": "太少(至少 {min_length} 项)",
    "literal_error": "取值须为 {expected}",
    "enum": "取值须为 {expected}",
    "string_type": "须为文字",
    "bool_type": "须为 true 或 false",
    "bool_parsing": "须为 true 或 false",
    "int_type": "须为整数",
    "int_parsing": "须为整数",
    "int_from_float": "须为整数",
    "greater_than_equal": "须不小于 {ge}",
    "less_than_equal": "须不大于 {le}",
    "greater_than": "须大于 {gt}",
    "less_than": "须小于 {lt}",
    "list_type": "须为列表(JSON 数组)",
    "dict_type": "须为 JSON 对象",
    "model_type": "须为 JSON 对象",
    "model_attributes_type": "须为 JSON 对象",
    "string_pattern_mismatch": "格式不对",
}


def _problem_zh(err: Any) -> str:
    kind = err["type"]
    if kind == "value_error":  # our own validators write "中文 / English"
        text = str(err.get("ctx", {}).get("error", "")) or err["msg"]
        return text.split(" / ", 1)[0]
    if kind == "string_too_short" and err.get("ctx", {}).get("min_length") == 1:
        return "不能为空"
    template = _PROBLEM_ZH.get(kind)
    if template is None:
        return "不符合要求"
    ctx = {
        k: str(v).replace(" or ", " 或 ").replace(", ", "、") for k, v in err.get("ctx", {}).items()
    }
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return template.split("(")[0].split("{")[0] or "不符合要求"


def _problem_en(err: Any) -> str:
    if err["type"] == "value_error":  # our own validators write "中文 / English"
        text = str(err.get("ctx", {}).get("error", "")) or err["msg"]
        return text.split(" / ", 1)[-1]
    return str(err["msg"])


def validation_detail(e: ValidationError) -> list[dict[str, Any]]:
    """Per-field errors, without echoing the input back: ``problem`` (in English),
    ``problem_zh`` (the same in Chinese) and ``type`` (for programs)."""
    return [
        {
            "field": ".".join(str(p) for p in err["loc"]),
            "problem": _problem_en(err),
            "problem_zh": _problem_zh(err),
            "type": err["type"],
        }
        for err in e.errors(include_url=False, include_input=False)
    ]


MAX_FIELDS_NAMED = 5
# A body of 20,000 unknown fields is answered with the first hundred, not a 3 MB list.
MAX_FIELDS_LISTED = 100


def validation_message(detail: list[dict[str, Any]]) -> tuple[str, str]:
    """The answer's message: which fields are wrong and why, Chinese and English."""
    shown = detail[:MAX_FIELDS_NAMED]
    more = len(detail) - len(shown)
    zh = ";".join(f"{d['field'] or '请求内容'}:{d['problem_zh']}" for d in shown)
    en = "; ".join(f"{d['field'] or 'the body'}: {d['problem']}" for d in shown)
    if more:
        zh += f";另有 {more} 处"
        en += f"; and {more} more"
    return f"提交的内容有误——{zh}", f"some fields are not valid — {en}"


def _page(request: web.Request, status: int, zh: str, en: str) -> web.Response:
    """An error page in the visitor's language (see ``layout.page_language``)."""
    from responder.web.layout import page_language, render_page

    lang = page_language(request)
    return render_page(
        "error.html", {"status": status, "zh": zh, "en": en, "lang": lang}, status=status
    )


def _retry_after(resp: web.Response, e: ResponderError) -> web.Response:
    """The database locked or unwritable (503, never a 500): say when to try again."""
    if isinstance(e, Unavailable):
        resp.headers["Retry-After"] = str(e.retry_after)
    return resp


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    api = request.path.startswith("/api/") or request.path == "/metrics"  # machine clients
    try:
        if not request.path.startswith("/api/"):
            refuse_compressed(request)  # only the API takes a compressed body (web.bodies)
        return await handler(request)
    except ResponderError as e:
        if not api:
            return _retry_after(_page(request, e.status, e.zh, e.en), e)
        resp = json_error(e.status, e.code, e.zh, e.en, e.detail)
        if e.status == 401:  # RFC 6750: say which scheme, so a client library knows what to send
            resp.headers["WWW-Authenticate"] = BEARER
        return _retry_after(resp, e)
    except ValidationError as e:
        detail = validation_detail(e)
        zh, en = validation_message(detail)
        detail = detail[:MAX_FIELDS_LISTED]
        if api:
            return json_error(422, "invalid", zh, en, detail)
        return _page(request, 422, zh, en)
    except RequestPayloadError:  # aiohttp could not decode the body: broken gzip or chunks
        zh = "请求内容无法读取(压缩或分块编码有误),请重新发送"
        en = "the body could not be read (its compression or chunked encoding is broken)"
        resp = json_error(400, "bad_request", zh, en) if api else _page(request, 400, zh, en)
        # Nothing more of this body can be read: end it here and close the connection after
        # the answer.  Otherwise aiohttp, draining the body after the answer, meets the same
        # error outside any handler and drops the connection unanswered (seen when the body's
        # bytes arrived after the handler had started reading).
        request.content.feed_eof()
        resp.force_close()
        return resp
    except ConnectionResetError:
        # The client went away while sending its body (a phone losing its network).  Nothing
        # was changed yet and nobody is left to answer: the access line records 499.
        return web.Response(status=CLIENT_CLOSED)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code, zh, en = _HTTP_CODES.get(e.status, ("http_error", e.reason, e.reason))
        if api or e.status in (401, 429):
            resp = json_error(e.status, code, zh, en) if api else _page(request, e.status, zh, en)
        else:
            resp = _page(request, e.status, zh, en)
        for h in ("WWW-Authenticate", "Allow", "Retry-After"):
            if h in e.headers:
                resp.headers[h] = e.headers[h]
        return resp
    except Exception:
        ref = request_id(request)  # the same id as the answer's X-Request-Id and the log line
        path = logged_path(request)  # no ack tokens, no forged lines
        log.exception("unhandled error %s on %s %s", ref, request.method, path)
        zh = f"服务内部错误(编号 {ref}),请联系管理员"
        en = f"internal error (reference {ref}); please tell the administrator"
        if api:
            return json_error(500, "internal", zh, en)
        return _page(request, 500, zh, en)
