"""The application factory: one aiohttp app with the API, the pages, the engine and health.

The engine (scheduler, dispatcher, watchdog) starts and stops with the app through
``cleanup_ctx``: on shutdown (SIGTERM) it stops taking work and lets sends in flight finish
and be recorded before the database closes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from responder.clock import Clock, SystemClock
from responder.config import Config
from responder.engine.runner import Engine
from responder.ops import Ops
from responder.secret import load_secret
from responder.store import open_store
from responder.web import (
    api,
    console,
    declare,
    devinbox,
    directory,
    health,
    incident_page,
    pages,
    review,
)
from responder.web.access import access_log
from responder.web.errors import errors
from responder.web.keys import CFG, CLOCK, DB, ENGINE, OPS, SECRET
from responder.web.security import security_headers

MAX_BODY = 256 * 1024  # a declaration or a release is a few KB; anything bigger is refused (413)


@web.middleware
async def foreground(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count the requests being answered, so that the dispatcher lets them go first.  Not the
    development inbox: those requests are the dispatcher's own messages arriving."""
    engine = request.app.get(ENGINE)
    if engine is None or request.path.startswith("/dev/"):
        return await handler(request)
    with engine.foreground.request():
        return await handler(request)


def create_app(
    cfg: Config,
    *,
    clock: Clock | None = None,
    secret: bytes | None = None,
    run_engine: bool = True,
) -> web.Application:
    app = web.Application(
        middlewares=[access_log, foreground, security_headers, errors], client_max_size=MAX_BODY
    )
    app[CFG] = cfg
    app[CLOCK] = clock or SystemClock()
    app[SECRET] = secret if secret is not None else load_secret(cfg.service.secret_file)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        db = await open_store(cfg.service.database).open()
        app[DB] = db
        engine = Engine(db, cfg, app[CLOCK], app[SECRET])
        app[ENGINE] = engine
        # The service layer: a change wakes the engine, so its timers take effect at once.
        app[OPS] = Ops(db, cfg, app[CLOCK], wake=engine.changed)
        if run_engine:
            await engine.start()
        try:
            yield
        finally:
            try:
                await engine.stop()
            finally:  # even when the stop is cut short: aiosqlite's thread would hold the exit
                await db.close()

    app.cleanup_ctx.append(lifecycle)
    api.setup(app)
    pages.setup(app)
    console.setup(app)
    declare.setup(app)  # /incidents/new before /incidents/{incident_id}
    incident_page.setup(app)
    directory.setup(app)
    review.setup(app)
    health.setup(app)
    if cfg.service.dev_inbox:
        devinbox.setup(app)
    return app
