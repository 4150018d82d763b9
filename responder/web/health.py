"""``/healthz`` and ``/metrics``.

``/healthz`` answers 503 when the database does not answer, its file was deleted or replaced
under the running service, it cannot be written (locked by another process, its disk full,
read-only: as the last write found), the engine is not running, its sending process cannot
send, or the scheduler or dispatcher lag exceeds ``alerts.max_lag``.  It needs no credentials
(load balancers and probes call it) and says nothing about incidents.

It answers 200 with ``"status": "degraded"`` while alerts fail on every channel and are being
tried again (:func:`alert_delivery`): the service itself works — a restart would not bring a
mail server back — but the people named are not being reached.  When they are reached again
it says so (``alerts.recovered_at``).

``/metrics`` is Prometheus text: counts read from the database at scrape time, and the engine's
histograms.  It takes a bearer token of any role (Prometheus: ``authorization`` with
``credentials_file``): the number of active major emergencies may not be public before the
authoritative release, and each scrape counts whole tables.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from responder.engine.metrics import escape_label, family
from responder.engine.outbox import STILL_MATTERS
from responder.obligations import CORRECTION
from responder.policy.rules import LEVELS
from responder.timeutil import from_db, iso_local, show, to_db
from responder.web.identity import require
from responder.web.keys import CFG, CLOCK, DB, ENGINE
from responder.web.routing import READ

log = logging.getLogger("responder.health")
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


@dataclass
class Delivery:
    """What ``/healthz`` says about alert delivery: (English, 中文) pairs, and the detail."""

    problems: list[tuple[str, str]] = field(default_factory=list)  # unhealthy
    degraded: list[tuple[str, str]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


async def alert_delivery(app: web.Application) -> Delivery:
    """Whether alerts reach people: the sending process can send, and which people's alerts
    are failing on every channel and being tried again (those that no longer matter left
    out), by person, with the channels tried and the next try.  People by name and id, no
    contact details and no incident: this answer needs no credentials."""
    cfg, db, engine = app[CFG], app[DB], app[ENGINE]
    out = Delivery()
    sender = engine.dispatcher.sender
    if sender.problem is not None:
        en, zh = sender.problem
        out.problems.append(
            (f"the sending process cannot send: {en}", f"发送进程无法发送提醒:{zh}")
        )
    rows = await db.fetchall(
        "SELECT n.person_id, n.kind, n.channels, n.status, n.retry_at, n.next_attempt_at"
        " FROM notifications n WHERE n.rounds > 0 AND n.status IN ('queued', 'sending', 'failed')"
        f" AND (n.status != 'failed' OR n.retry_at IS NOT NULL) AND {STILL_MATTERS}"
    )
    people: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = people.setdefault(
            r["person_id"], {"channels": [], "alerts": 0, "next": None, "admin": False}
        )
        entry["alerts"] += 1
        entry["channels"] += [c for c in json.loads(r["channels"]) if c not in entry["channels"]]
        entry["admin"] = entry["admin"] or r["kind"] == "watchdog"  # the service's alarms
        nxt = from_db(r["retry_at"] if r["status"] == "failed" else r["next_attempt_at"])
        if nxt is not None and (entry["next"] is None or nxt < entry["next"]):
            entry["next"] = nxt
    failing = []
    for person_id, entry in sorted(people.items()):
        person = cfg.person(person_id)
        name = person.name if person else person_id
        channels, n, at = entry["channels"], entry["alerts"], show(entry["next"], cfg.tz)
        out.degraded.append((
            f"{n} alert(s) to {name} ({person_id}) failed on every channel"
            f" ({', '.join(channels)}); trying again, next at {at}",
            f"发给{name}({person_id})的 {n} 条提醒在所有渠道({'、'.join(channels)})"
            f"均未送达,正在重试,下次 {at}",
        ))  # fmt: skip
        failing.append({
            "person": person_id,
            "person_name": name,
            "administrator": entry["admin"],
            "channels": channels,
            "alerts": n,
            "next_try_at": iso_local(entry["next"], cfg.tz),
        })  # fmt: skip
    recovered = engine.dispatcher.recovered_at
    out.detail = {
        "failing": failing,
        # When an alert that had failed on every channel last reached its person.
        "recovered_at": iso_local(recovered, cfg.tz),
        "sending_process": (
            "cannot send" if sender.problem else "ready" if sender.ready else "starting"
        ),
    }
    return out


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
    if (fault := db.write_fault) is not None:  # as the last write found; the next one retells
        en, zh = fault
        problems.append((
            f"the database cannot be written: {en}; changes are refused and alerts wait",
            f"数据库无法写入:{zh};更改被拒绝,提醒暂停",
        ))  # fmt: skip
    if not engine.running:
        problems.append(("engine not running", "提醒引擎未在运行,提醒不会发出"))
    bound = request.app[CFG].alerts.max_lag.total_seconds()
    if lag is not None and lag.worst > bound:
        problems.append((
            f"alerts are {lag.worst:.0f} s late (bound {bound:.0f} s)",
            f"提醒已延迟 {lag.worst:.0f} 秒(上限 {bound:.0f} 秒)",
        ))  # fmt: skip
    delivery = Delivery()
    try:
        delivery = await alert_delivery(request.app)
    except Exception:
        if lag is not None:  # else the database, already reported
            log.exception("/healthz could not check the alerts' delivery")
            problems.append(("alert delivery could not be checked", "无法检查提醒的送达情况"))
    problems += delivery.problems
    degraded = delivery.degraded
    body = {
        "status": "unhealthy" if problems else "degraded" if degraded else "ok",
        "problems": [en for en, _ in problems],
        "problems_zh": [zh for _, zh in problems],
        "degraded": [en for en, _ in degraded],
        "degraded_zh": [zh for _, zh in degraded],
        "scheduler_lag_s": round(lag.steps, 3) if lag else None,
        "dispatcher_lag_s": round(lag.outbox, 3) if lag else None,
        "alerts": delivery.detail,
    }
    if getattr(db, "dialect", "sqlite") == "postgresql":
        # Which replica answered: behind a load balancer each one is probed on its own
        # address, and the answer says whose it is.
        body["replica"] = request.app[CFG].service.replica_name()
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
        "SELECT COUNT(CASE WHEN status = 'open' AND due_at > ? THEN 1 END),"
        " COUNT(CASE WHEN status = 'open' AND due_at <= ? THEN 1 END),"
        " COUNT(CASE WHEN status = 'received' THEN 1 END) FROM accountability_corrections",
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
    delivery = await alert_delivery(request.app)
    lines += [
        *family(
            "responder_alerts_failing",
            "gauge",
            "alerts that failed on every channel and are being tried again",
        ),
        f"responder_alerts_failing {sum(f['alerts'] for f in delivery.detail['failing'])}",
        *family(
            "responder_sending_process_ready",
            "gauge",
            "1 when the sending process can send, 0 when it could not start",
        ),
        f"responder_sending_process_ready {0 if engine.dispatcher.sender.problem else 1}",
    ]
    lines += engine.metrics.render()
    if getattr(db, "dialect", "sqlite") == "postgresql":  # replicas: whose figures these are
        lines = labelled(lines, request.app[CFG].service.replica_name())
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


def labelled(lines: list[str], replica: str) -> list[str]:
    """Every sample with ``replica="…"``: the counts of one process (sends, lateness) are
    told apart, and the cluster-wide ones (incidents, obligations: read from the shared
    database) are the same in every replica's answer — sum the former, take any of the
    latter."""
    label = f'replica="{escape_label(replica)}"'
    out = []
    for line in lines:
        if not line or line.startswith("#"):
            out.append(line)
        elif "{" in line.split(" ", 1)[0]:
            name, rest = line.split("{", 1)
            out.append(f"{name}{{{label},{rest}")
        else:
            name, value = line.split(" ", 1)
            out.append(f"{name}{{{label}}} {value}")
    return out


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
