"""What the benchmarks share: statistics, the results table, the bench deployment (config and
10,000 preloaded incidents), and the HTTP sink that runs in its own process.

The sink is ``tests.sinks.HttpSink`` (a real aiohttp server) run in a *separate process*, so
that receiving messages does not compete with the engine for its event loop.  It stamps every
request with the wall clock (``time.time()``) on arrival; the engine process compares that with
the due times in its database — both processes read the same system clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from responder import obligations
from responder.config import Alerts, Config, Person, Service, Unit, load_rule_set
from responder.policy.planner import Facts, plan_declaration
from responder.store import Database, audit
from responder.timeutil import to_db
from tests.sinks import HttpSink, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "rules" / "gbf-2016-80.toml"
HOST = "127.0.0.1"
SECRET = b"responder-bench-secret-0123456789"[:32]
KEY_HEADER = "X-Responder-Notification"
SINK_LIFETIME_S = 900.0  # a sink whose parent forgot it stops by itself after this


# -- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def dist(values: Sequence[float]) -> str:
    s = summary(values)
    return f"p50 {ms(s['p50'])} · p99 {ms(s['p99'])} · max {ms(s['max'])} (n={s['n']})"


# -- results ------------------------------------------------------------------------------


@dataclass
class Row:
    bench: str
    metric: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: informational

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


def table(rows: Sequence[Row]) -> str:
    head = ("bench", "metric", "value", "target", "")
    cells = [head, *[(r.bench, r.metric, r.value, r.target, r.verdict) for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("| " + " | ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)) + " |")
        if n == 0:
            lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"nproc {os.cpu_count()} ({cpu or platform.processor() or 'unknown cpu'}), "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.system()} {platform.release()}; load average now {load}"
    )


def proc_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process ``pid`` (Linux /proc), else NaN."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by this process and by helper processes over a phase, as cores busy."""

    def __init__(self, **helpers: int | None) -> None:
        self.helpers = {name: pid for name, pid in helpers.items() if pid}
        self.wall = time.monotonic()
        self.own = time.process_time()
        self.start = {name: proc_cpu_seconds(pid) for name, pid in self.helpers.items()}

    def report(self) -> str:
        wall = time.monotonic() - self.wall
        own = (time.process_time() - self.own) / wall
        text = f"this process {own:.2f} cores"
        for name, pid in self.helpers.items():
            used = (proc_cpu_seconds(pid) - self.start[name]) / wall
            text += f", {name} {used:.2f} cores"
        return text + f" (over {wall:.1f} s)"


def sender_pid(engine: Any) -> int | None:
    """The engine's sending process (apprise runs there), if it is running."""
    process = engine.dispatcher.sender._process
    return int(process.pid) if process is not None else None


def code_version() -> str:
    """The commit measured, and whether responder/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "responder"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" + uncommitted changes in responder/" if dirty else "")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the bench deployment -------------------------------------------------------------------


def bench_config(database: Path, sink_port: int) -> Config:
    """The example deployment's structure with one person per unit and one channel each.

    Every channel kind is a json:// post to the sink (path = channel kind); every person has the
    single channel ``sms``, so a step with audience ``head@lead`` makes exactly one message.
    """
    channels = {
        kind: f"json://{HOST}:{sink_port}/{kind}?:to={{phone}}"
        for kind in ("sms", "voice", "email", "chat")
    }
    units = [
        Unit(id="gov-office", name="区政府办公室", name_en="Government Office", tags=["office"]),
        Unit(id="publicity", name="区委宣传部", name_en="Publicity", tags=["publicity"]),
        Unit(id="emergency", name="区应急管理局", name_en="Emergency Management"),
        Unit(id="health", name="区卫生健康委员会", name_en="Health Commission"),
    ]
    people = [
        Person(
            id="duty",
            name="陈静",
            unit="gov-office",
            roles=["duty_officer", "leader", "admin"],
            phone="+8613800000005",
            channels=["sms"],
        ),
        Person(
            id="publicity-head",
            name="吴刚",
            unit="publicity",
            roles=["head"],
            phone="+8613800000007",
            channels=["sms"],
        ),
        Person(
            id="emergency-head",
            name="王芳",
            unit="emergency",
            roles=["head", "spokesperson"],
            phone="+8613800000001",
            channels=["sms"],
        ),
        Person(
            id="health-head",
            name="赵敏",
            unit="health",
            roles=["head", "spokesperson"],
            phone="+8613800000003",
            channels=["sms"],
        ),
    ]
    cfg = Config(
        service=Service(database=str(database), public_url=f"http://{HOST}:8080"),
        alerts=Alerts(),  # the defaults: concurrency 16, 3 attempts, max_lag 2 min
        channels=channels,
        units=units,
        people=people,
    )
    cfg.rule_sets = [load_rule_set(RULES)]
    return cfg


async def preload(
    db: Database,
    cfg: Config,
    n: int,
    *,
    start: datetime,
    spacing: timedelta = timedelta(minutes=2),
    batch: int = 1000,
) -> None:
    """Declare ``n`` active level I/II incidents, all of whose steps lie in the future.

    Bulk SQL that mirrors ``Ops.declare``: the same planner (``plan_declaration``), the same
    ``obligations.add`` and one ``audit.append`` per incident, but 1,000 incidents per transaction
    instead of one (``Ops.declare`` in a loop takes ~3 ms each, 30 s for 10,000).  Incident ``i``
    counts as declared at ``start + i * spacing`` (30 min after it occurred), so every one of its
    10 steps (2 obligations x 5 steps) is due after ``start``.
    """
    rules = cfg.rule_sets[0]
    leads = ("emergency", "health")
    for first in range(0, n, batch):

        def job(tx: sqlite3.Connection, first: int = first) -> Any:
            for i in range(first, min(n, first + batch)):
                declared = start + i * spacing
                occurred = declared - timedelta(minutes=30)
                level = "I" if i % 5 == 0 else "II"
                plan = plan_declaration(Facts(level, occurred, declared), rules, declared)
                iid = f"INC-BENCH-{i:05d}"
                lead = leads[i % len(leads)]
                tx.execute(
                    "INSERT INTO incidents (id, title, category, level, occurred_at, declared_at,"
                    " learned_at, location, summary, lead_unit, co_units, drill, rule_set_id,"
                    " declared_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        iid,
                        f"基准测试事件 {i}",
                        "accident",
                        level,
                        to_db(occurred),
                        to_db(declared),
                        None,
                        "某区某街道",
                        "bench preload",
                        lead,
                        "[]",
                        0,
                        rules.id,
                        "bench",
                    ),
                )
                obligations.add(tx, cfg, iid, rules.id, plan, declared)
                audit.append(
                    tx,
                    declared,
                    "bench",
                    "incident.declared",
                    iid,
                    {
                        "title": f"基准测试事件 {i}",
                        "level": level,
                        "lead_unit": lead,
                        "rule_set": rules.id,
                        "obligations": [
                            {"kind": o.kind, "deadline": to_db(o.deadline), "status": o.status}
                            for o in plan.obligations
                        ],
                    },
                )

        await db.transact(job)


def far_future() -> datetime:
    """Where preloaded incidents begin: a day from now, so nothing of theirs fires."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)


# -- the sink process -------------------------------------------------------------------------


class TimedSink(HttpSink):
    """``HttpSink`` that stamps each request's arrival and answers a few control paths."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.arrivals: list[tuple[float, str, str]] = []
        self.done = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.time()
        if request.path.startswith("/__bench/"):
            return self._control(request)
        self.arrivals.append((arrived, request.headers.get(KEY_HEADER, ""), request.path))
        return await super()._handle(request)

    def _control(self, request: web.Request) -> web.Response:
        what = request.path.removeprefix("/__bench/")
        if what == "count":
            return web.json_response({"count": len(self.arrivals)})
        if what == "arrivals":
            return web.json_response(self.arrivals)
        if what == "reset" and request.method == "POST":
            self.arrivals.clear()
            self.requests.clear()
            return web.json_response({"ok": True})
        if what == "stop" and request.method == "POST":
            self.done.set()
            return web.json_response({"ok": True})
        return web.json_response({"error": "unknown"}, status=404)


async def _sink_serve(port: int, lifetime: float) -> None:
    sink = TimedSink(port)
    await sink.start()
    parent = os.getppid()
    deadline = time.monotonic() + lifetime
    try:
        # Stop on request, when the parent is gone, or after `lifetime` at the latest.
        while not sink.done.is_set() and time.monotonic() < deadline and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sink.done.wait(), 0.5)
    finally:
        await sink.stop()


def _sink_main(port: int, lifetime: float) -> None:
    asyncio.run(_sink_serve(port, lifetime))


def wait_listening(port: int, timeout: float = 20.0, proc: Any = None) -> None:
    """Wait until something accepts connections on ``port`` (and ``proc``, if given, lives)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if proc is not None and not proc.is_alive():
                raise RuntimeError(f"{proc.name} exited with {proc.exitcode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout}s") from None
            time.sleep(0.05)


class SinkProcess:
    """The sink in its own (spawned) process: ``with SinkProcess() as sink: sink.port``."""

    def __init__(self, lifetime: float = SINK_LIFETIME_S) -> None:
        self.port = free_port()
        self.lifetime = lifetime
        self.proc: Any = None

    def __enter__(self) -> SinkProcess:
        ctx = multiprocessing.get_context("spawn")
        self.proc = ctx.Process(
            target=_sink_main, args=(self.port, self.lifetime), name="bench-sink", daemon=True
        )
        self.proc.start()
        wait_listening(self.port, proc=self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self._call("stop", "POST")
        self.proc.join(5)
        if self.proc.is_alive():  # our own child, by its handle
            self.proc.terminate()
            self.proc.join(5)
        self.proc = None

    def _call(self, what: str, method: str = "GET") -> Any:
        req = urllib.request.Request(
            f"http://{HOST}:{self.port}/__bench/{what}",
            method=method,
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    # Async wrappers: called from a running event loop, so they run in a thread.
    async def count(self) -> int:
        return int((await asyncio.to_thread(self._call, "count"))["count"])

    async def arrivals(self) -> list[tuple[float, str, str]]:
        return [tuple(a) for a in await asyncio.to_thread(self._call, "arrivals")]  # type: ignore[misc]

    async def reset(self) -> None:
        await asyncio.to_thread(self._call, "reset", "POST")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the sink process has used so far."""
        return proc_cpu_seconds(self.proc.pid)

    async def wait_for(self, n: int, until: float) -> int:
        """Poll until ``n`` requests arrived or the wall clock passes ``until``; return count."""
        while True:
            got = await self.count()
            if got >= n or time.time() > until:
                return got
            await asyncio.sleep(0.25)
