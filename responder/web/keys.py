"""Typed application state (aiohttp AppKeys)."""

from __future__ import annotations

from aiohttp import web

from responder.clock import Clock
from responder.config import Config
from responder.engine.runner import Engine
from responder.store import Database

CFG = web.AppKey("cfg", Config)
DB = web.AppKey("db", Database)
CLOCK = web.AppKey("clock", Clock)
SECRET = web.AppKey("secret", bytes)
ENGINE = web.AppKey("engine", Engine)
