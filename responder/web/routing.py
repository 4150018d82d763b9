"""The API's route table, and the OpenAPI 3.1 document generated from it.

Each route names its request and response models and the roles it admits; the handlers use
the same table to parse bodies and query strings and to shape answers, so the document and
the server cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from responder import __version__
from responder.web.schemas import Error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

READ = ("viewer", "reviewer", "duty_officer", "admin")
OPERATE = ("duty_officer", "admin")
REVIEW = ("reviewer", "admin")  # decide accountability records
ADMIN = ("admin",)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    roles: tuple[str, ...]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    many: bool = False  # the response is a list of `response`
    status: int = 200
    errors: tuple[int, ...] = field(default=())
    tag: str = "incidents"
    headers: tuple[dict[str, Any], ...] = ()  # OpenAPI header parameters the handler reads
    location: bool = False  # the success answer says where the new resource is (Location)
    # Other forms of the success answer (``?format=``): text, by media type (a report's CSV).
    media: tuple[str, ...] = ()


# What the handlers accept in a path (``api.incident_id`` / ``api.int_param``); anything else
# is answered 422 (or 404 when the router cannot match it at all).
ID_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 2**62 - 1}
INCIDENT_ID_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 64}


def _path_params(path: str) -> list[dict[str, Any]]:
    out = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            schema = INCIDENT_ID_SCHEMA if name == "incident_id" else ID_SCHEMA
            out.append({"name": name, "in": "path", "required": True, "schema": dict(schema)})
    return out


def _query_params(model: type[BaseModel], defs: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.get("$defs", {}))
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]


REPLAYED_HEADER: dict[str, Any] = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the answer to an earlier request with the same"
        " Idempotency-Key (nothing was changed again); absent otherwise.",
        "required": False,
        "schema": {"type": "string", "enum": ["true"]},
    }
}
LOCATION_HEADER: dict[str, Any] = {
    "Location": {
        "description": "Where the incident is: `/api/v1/incidents/{id}`.",
        "required": True,
        "schema": {"type": "string"},
    }
}
REQUEST_ID_HEADER: dict[str, Any] = {
    "X-Request-Id": {
        "description": "The id of this request on the service's log line; quote it when"
        " reporting a problem. Send your own (1-64 letters, digits or `._:-`, e.g. your"
        " correlation id) in the request's X-Request-Id and it is kept.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
    }
}


def openapi(routes: list[Route], base: str = "/api/v1") -> dict[str, Any]:
    models: set[type[BaseModel]] = {Error}
    for r in routes:
        models.update(m for m in (r.body, r.response) if m is not None)
    _, top = models_json_schema(
        [
            (m, "validation" if any(m is r.body for r in routes) else "serialization")
            for m in models
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, Any] = {}
    error_ref = {"$ref": "#/components/schemas/Error"}
    for r in routes:
        op: dict[str, Any] = {
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": r.handler.__name__,
            "parameters": _path_params(r.path),
            "responses": {},
        }
        if r.roles:
            op["security"] = [{"bearer": []}]
            op["description"] = "Roles: " + ", ".join(r.roles)
        else:
            op["security"] = []
        if r.query is not None:
            op["parameters"] += _query_params(r.query, schemas)
        op["parameters"] += [dict(h) for h in r.headers]
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}
                    }
                },
            }
        ok: dict[str, Any] = {"description": "OK"}
        if r.response is not None:
            ref = {"$ref": f"#/components/schemas/{r.response.__name__}"}
            ok["content"] = {
                "application/json": {"schema": {"type": "array", "items": ref} if r.many else ref}
            }
        for media in r.media:
            ok.setdefault("content", {})[media] = {"schema": {"type": "string"}}
        ok["headers"] = dict(REQUEST_ID_HEADER)
        if any(h.get("name") == "Idempotency-Key" for h in r.headers):
            ok["headers"].update(REPLAYED_HEADER)
        if r.location:
            ok["headers"].update(LOCATION_HEADER)
        op["responses"][str(r.status)] = ok
        # 422 for an unknown query parameter on every route; 400 for two Authorization headers.
        codes = set(r.errors) | {422}
        if r.roles:
            codes |= {400, 401, 403}
        if r.body is not None:
            codes |= {400, 413, 415}
        for code in sorted(codes):
            op["responses"][str(code)] = {
                "description": "error",
                "headers": dict(REQUEST_ID_HEADER),
                "content": {"application/json": {"schema": error_ref}},
            }
        paths.setdefault(base + r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "responder API",
            "version": __version__,
            "description": "突发事件信息发布时限:申报事件、记录发布与发布会、查询时限与提醒。"
            " Times are RFC 3339 with an offset; naive times are refused.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `responder token create`. 401 `unauthorized`:"
                    " missing, unknown or revoked, or its user disabled; 401 `token_expired`:"
                    " past the end it was given (`--days`).",
                }
            },
        },
    }
