"""Typed application state (aiohttp AppKeys)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from responder.clock import Clock
from responder.config import Config
from responder.engine.runner import Engine
from responder.ops import Ops
from responder.store import Database

CFG = web.AppKey("cfg", Config)
DB = web.AppKey("db", Database)
CLOCK = web.AppKey("clock", Clock)
SECRET = web.AppKey("secret", bytes)
ENGINE = web.AppKey("engine", Engine)
OPS = web.AppKey("ops", Ops)  # the service layer every change goes through


def request_key(name: str, kind: type) -> Any:
    """A typed per-request key where aiohttp has them (3.14+), else a plain string."""
    make = getattr(web, "RequestKey", None)
    return make(name, kind) if make is not None else f"responder.{name}"
