"""What one unit of the engine's work costs in CPU, measured alone (no load, no concurrency).

``.venv/bin/python -m tests.bench.costs [--declarations N] [--sends N] [--repeat N]``

1. **Firing**: N declarations' first steps (2 per declaration, 4 notifications) are due at once
   in a real SQLite file; ``Scheduler.fire_due`` fires them.  CPU per step fired and per
   notification queued (this process, all its threads: the writer thread does the SQL).
2. **Sending**: N ``json://`` messages sent one after another through ``send.send`` (apprise,
   as the sending process runs it) to the bench's HTTP sink in its own process.  CPU per
   message in the sending process.
3. **This host's speed now**: a fixed loop of a million Python iterations, before and after.
   On a shared host it moves by two times from one minute to the next, and every other figure
   with it: read the figures beside it.

Medians over ``--repeat`` runs.  Uses the real clock only to measure, never to wait.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from responder.clock import SystemClock
from responder.engine.apprise_call import send
from responder.engine.metrics import Metrics
from responder.engine.scheduler import Scheduler
from responder.store import Database
from tests.bench.common import (
    SECRET,
    Row,
    SinkProcess,
    bench_config,
    far_future,
    log,
    machine,
    preload,
    table,
)


def host_loop_ms() -> float:
    """Wall time of a fixed pure-Python loop: how fast this host runs Python just now."""
    started = time.perf_counter()
    x = 0
    for i in range(1_000_000):
        x += i * i % 7
    return (time.perf_counter() - started) * 1000


async def firing(declarations: int) -> tuple[float, float]:
    """(CPU ms per step fired, CPU ms per notification queued)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "costs.sqlite3"
        cfg = bench_config(path, sink_port=9)  # nothing is sent: the sink is never called
        db = await Database(str(path)).open()
        try:
            # Every declaration's first steps due a minute ago, the rest hours ahead.
            start = far_future() - timedelta(days=1, minutes=1)
            await preload(db, cfg, declarations, start=start, spacing=timedelta(0))
            scheduler = Scheduler(db, cfg, SystemClock(), SECRET, Metrics(), lambda: None)
            cpu = time.process_time()
            queued = await scheduler.fire_due()
            cpu = time.process_time() - cpu
            row = await db.fetchone("SELECT COUNT(*) FROM steps WHERE status = 'fired'")
            steps = int(row[0]) if row else 0
        finally:
            await db.close()
    if not steps or not queued:
        raise RuntimeError("nothing fired: the preload's first steps were not due")
    return cpu / steps * 1000, cpu / queued * 1000


def sending(port: int, n: int) -> float:
    """CPU ms per message sent through apprise, one after another."""
    url = f"json://127.0.0.1:{port}/sms?:to=%2B8613800000001&+X-Responder-Notification=1-sms"
    for _ in range(20):  # warm up: imports, the first connection
        send(url, "title", "body", "sms")
    cpu = time.process_time()
    for _ in range(n):
        outcome = send(url, "突发事件提醒", "正文" * 100, "sms")
        if not outcome.ok:
            raise RuntimeError(f"the sink refused a message: {outcome.error}")
    return (time.process_time() - cpu) / n * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--declarations", type=int, default=2000)
    p.add_argument("--sends", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    loops, fired, queued, sent = [], [], [], []
    with SinkProcess() as sink:
        for run in range(1, args.repeat + 1):
            log(f"costs: run {run} of {args.repeat}")
            loops.append(host_loop_ms())
            per_step, per_notification = asyncio.run(firing(args.declarations))
            fired.append(per_step)
            queued.append(per_notification)
            sent.append(sending(sink.port, args.sends))
            loops.append(host_loop_ms())

    def runs(values: list[float], unit: str = "ms") -> str:
        each = " / ".join(f"{v:.2f}" for v in values)
        return f"median {statistics.median(values):.2f} {unit} ({each})"

    rows = [
        Row("costs", "CPU per step fired", runs(fired)),
        Row("costs", "CPU per notification queued", runs(queued)),
        Row("costs", "CPU per json:// message sent (apprise)", runs(sent)),
        Row("costs", "host: a million-iteration loop, wall", runs(loops)),
    ]
    print(f"\n{machine()}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
