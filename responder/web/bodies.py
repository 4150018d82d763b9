"""Request bodies: which may come compressed, and how far one is inflated.

aiohttp would inflate every compressed body itself, on every route and before any handler ran:
a 2 MB gzip body that inflates to 2 GB, sent to ``/ack/…`` without any credentials, kept a core
busy for seconds while aiohttp read it (and drained it after the answer).  The service runs
aiohttp with ``auto_decompress=False`` (``responder.web.server.HANDLER``) and decides here:

* the JSON API takes gzip and deflate, after the caller is authenticated, inflated a piece at a
  time and stopped as soon as the inflated body passes ``client_max_size`` (413);
* every other route (pages, sign-in, acknowledgement, the development inbox) takes no
  compressed body: 415, before anything is read;
* any other coding is 415 (``unsupported_encoding``), as the README says.
"""

from __future__ import annotations

import zlib

from aiohttp import web

from responder.errors import ResponderError

ACCEPTED = ("gzip", "deflate")


class UnsupportedEncoding(ResponderError):
    status = 415


class UnreadableBody(ResponderError):
    """The body says it is compressed and is not (or stops halfway)."""

    status = 400


def unsupported() -> UnsupportedEncoding:
    return UnsupportedEncoding(
        "unsupported_encoding",
        "请求内容的压缩方式不受支持;请不压缩,或用 gzip、deflate 之一",
        "the body's Content-Encoding is not supported: send it uncompressed, or gzip or"
        " deflate (one of them)",
    )


def broken() -> UnreadableBody:
    return UnreadableBody(
        "bad_request",
        "请求内容无法读取(压缩或分块编码有误),请重新发送",
        "the body could not be read (its compression or chunked encoding is broken)",
    )


def codings(request: web.Request) -> list[str]:
    """The body's Content-Encoding, one entry per coding applied; none for ``identity``."""
    given = [
        c.strip().lower()
        for v in request.headers.getall("Content-Encoding", [])
        for c in v.split(",")
    ]
    return [c for c in given if c != "identity"]


def refuse_compressed(request: web.Request) -> None:
    """A route outside the API: a compressed body is refused before it is read (415)."""
    if request.body_exists and codings(request):
        raise UnsupportedEncoding(
            "unsupported_encoding",
            "此地址不接受压缩的请求内容,请不压缩发送",
            "this address takes no compressed body: send it uncompressed",
        )


async def read_body(request: web.Request) -> bytes:
    """The API's body as bytes, inflated when it came gzip or deflate.  Neither what arrives
    nor what it inflates to may pass ``request.client_max_size`` (413)."""
    coding = codings(request)
    if len(coding) > 1 or (coding and coding[0] not in ACCEPTED):
        # aiohttp would read an unknown coding as plain bytes, and answer br in plain text.
        raise unsupported()
    limit = request.client_max_size
    if (request.content_length or 0) > limit:  # refused before it is sent
        raise web.HTTPRequestEntityTooLarge(limit, request.content_length or 0)
    if not coding:
        return await request.read()  # bounded by client_max_size → 413
    return await _inflate(request, coding[0], limit)


async def _inflate(request: web.Request, coding: str, limit: int) -> bytes:
    inflater: zlib._Decompress | None = None
    body = bytearray()
    received = 0
    async for piece in request.content.iter_any():
        received += len(piece)
        if received > limit:
            raise web.HTTPRequestEntityTooLarge(limit, received)
        if inflater is None:
            inflater = zlib.decompressobj(_window(coding, piece))
        elif inflater.eof:
            raise broken()  # bytes after the end of the compressed stream
        try:
            # Never more than one byte past the limit: a small body cannot make a large one.
            body += inflater.decompress(piece, limit + 1 - len(body))
        except zlib.error:
            raise broken() from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise web.HTTPRequestEntityTooLarge(limit, len(body))
        if inflater.eof and inflater.unused_data:
            raise broken()
    if inflater is None or not inflater.eof:
        raise broken()  # empty, or cut short
    return bytes(body)


def _window(coding: str, first: bytes) -> int:
    """zlib's wbits for the body: gzip; deflate as RFC 9110 means it (zlib-wrapped), or the
    raw deflate some clients send instead (as aiohttp and browsers accept)."""
    if coding == "gzip":
        return 16 + zlib.MAX_WBITS
    return zlib.MAX_WBITS if first[:1] and first[0] & 0x0F == 8 else -zlib.MAX_WBITS
