"""``/healthz`` and ``/metrics``.

``/healthz`` answers 503 when the database does not answer, its file was deleted or replaced
under the running service, the engine is not running, or the scheduler or dispatcher lag exceeds
``alerts.max_lag``.  It needs no credentials (load balancers and probes call it) and says
nothing about incidents.

``/metrics`` is Prometheus text: counts read from the database at scrape time, and the engine's
histograms.  It takes a bearer token of any role (Prometheus: ``authorization`` with
``credentials_file``): the number of active major emergencies may not be public before the
authoritative release, and each scrape counts whole tables.
"""

from __future__ import annotations

import json

from aiohttp import web

from responder.engine.metrics import escape_label, family
from responder.obligations import CORRECTION
from responder.policy.rules import LEVELS
from responder.timeutil import from_db, to_db
from responder.web.identity import require
from responder.web.keys import CFG, CLOCK, DB, ENGINE
from responder.web.routing import READ

OBLIGATION_STATUSES = ("open", "met", "breached", "waived")

# The database file deleted or replaced under the running service: it goes on answering and
# accepting writes, into a file the next start will not open.  (English, 中文)
_DATABASE_FILE = {
    "gone": (
        "the database file is no longer at its path: changes made now are lost on restart",
        "数据库文件已不在其路径上:此后的更改在重启后会丢失",
    ),
    "replaced": (
        "the database file at its path is not the one this service opened: changes made now"
        " are lost on restart",
        "数据库路径上的文件已不是本服务打开的那个:此后的更改在重启后会丢失",
    ),
}


async def healthz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    db = request.app[DB]
    problems: list[tuple[str, str]] = []  # (English, 中文): an administrator reads this too
    lag = None
    try:
        await db.fetchone("SELECT 1")
        lag = await engine.lag()
    except Exception:
        problems.append(("database not reachable", "数据库无法访问"))
    if (state := db.file_state()) != "same":
        problems.append(_DATABASE_FILE[state])
    if not engine.running:
        problems.append(("engine not running", "提醒引擎未在运行,提醒不会发出"))
    bound = request.app[CFG].alerts.max_lag.total_seconds()
    if lag is not None and lag.worst > bound:
        problems.append((
            f"alerts are {lag.worst:.0f} s late (bound {bound:.0f} s)",
            f"提醒已延迟 {lag.worst:.0f} 秒(上限 {bound:.0f} 秒)",
        ))  # fmt: skip
    body = {
        "status": "ok" if not problems else "unhealthy",
        "problems": [en for en, _ in problems],
        "problems_zh": [zh for _, zh in problems],
        "scheduler_lag_s": round(lag.steps, 3) if lag else None,
        "dispatcher_lag_s": round(lag.outbox, 3) if lag else None,
    }
    # Chinese as written, as the API answers: an administrator reads problems_zh with curl.
    return web.json_response(
        body,
        status=200 if not problems else 503,
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


async def metrics(request: web.Request) -> web.Response:
    await require(request, READ)
    db = request.app[DB]
    engine = request.app[ENGINE]
    lines = family(
        "responder_incidents_active", "gauge", "incidents declared and not closed, by level"
    )
    active = {
        (row[0], bool(row[1])): row[2]
        for row in await db.scan(
            "SELECT level, drill, COUNT(*) FROM incidents WHERE status = 'active'"
            " GROUP BY level, drill"
        )
    }
    # Every level, drills apart and zeros included: an alert rule on real major incidents
    # (level="II",drill="false") must not count an exercise, and a series must not vanish at 0.
    for level in LEVELS:
        for drill in (False, True):
            lines.append(
                f'responder_incidents_active{{level="{level}",drill="{str(drill).lower()}"}}'
                f" {active.get((level, drill), 0)}"
            )
    lines += family("responder_obligations", "gauge", "publication obligations by status")
    counted = {
        (row[0], bool(row[1])): row[2]
        for row in await db.scan(
            "SELECT o.status, i.drill, COUNT(*) FROM obligations o"
            " JOIN incidents i ON i.id = o.incident_id"
            f" WHERE o.kind != '{CORRECTION}' GROUP BY o.status, i.drill"
        )
    }
    # Drills apart, as for incidents: an alert on breached="true" must not fire for an
    # exercise.  A correction's clock (限期整改) is not a publication duty: counted below.
    for status in OBLIGATION_STATUSES:
        for drill in (False, True):
            lines.append(
                f'responder_obligations{{status="{status}",drill="{str(drill).lower()}"}}'
                f" {counted.get((status, drill), 0)}"
            )
    lines += family(
        "responder_corrections", "gauge", "corrections (限期整改) asked of units, by state"
    )
    now_db = to_db(request.app[CLOCK].now())
    (row,) = await db.scan(
        "SELECT COALESCE(SUM(status = 'open' AND due_at > ?), 0),"
        " COALESCE(SUM(status = 'open' AND due_at <= ?), 0),"
        " COALESCE(SUM(status = 'received'), 0) FROM accountability_corrections",
        (now_db, now_db),
    )
    for state, n in zip(("open", "overdue", "received"), row, strict=True):
        lines.append(f'responder_corrections{{state="{state}"}} {n}')
    lines += family(
        "responder_notifications", "gauge", "notifications by current channel and status"
    )
    for row in await db.scan(
        "SELECT json_extract(channels, '$[' || channel_index || ']') AS channel, status, COUNT(*)"
        " FROM notifications GROUP BY channel, status"
    ):
        # A channel is named in the config, and a name may hold a quote or a backslash.
        channel, status = escape_label(row[0]), escape_label(row[1])
        lines.append(f'responder_notifications{{channel="{channel}",status="{status}"}} {row[2]}')
    now = request.app[CLOCK].now()
    soonest = await db.fetchone(
        "SELECT MIN(t.expires_at) FROM tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.revoked_at IS NULL AND u.disabled = 0 AND t.expires_at > ?",
        (to_db(now),),
    )
    if soonest is not None and soonest[0] is not None:
        # For an alert rule ("< 7 days"): an integration's token must be replaced before it
        # ends, not discovered ended at night.
        left = (from_db(soonest[0]) - now).total_seconds()  # type: ignore[operator]
        lines += [
            *family(
                "responder_token_next_expiry_seconds",
                "gauge",
                "seconds until the next active API token ends",
            ),
            f"responder_token_next_expiry_seconds {left:.0f}",
        ]
    lag = await engine.lag()
    lines += [
        *family(
            "responder_scheduler_lag_seconds", "gauge", "how late the oldest due alert step is"
        ),
        f"responder_scheduler_lag_seconds {lag.steps}",
        *family(
            "responder_dispatcher_lag_seconds",
            "gauge",
            "how late the oldest due notification is",
        ),
        f"responder_dispatcher_lag_seconds {lag.outbox}",
    ]
    lines += engine.metrics.render()
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
