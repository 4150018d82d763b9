"""First-alert benchmark: how late is the first message after a fresh start of the service?

The first alert after every start used to pay for apprise loading its plugins (~150 ms on a
quiet machine, up to ~560 ms measured) in the sending process: 170–560 ms from due to arrival,
against ~10 ms warm.  The sending process now loads them before it takes its first message.

Set-up, per start (``--starts``, default 10): a *fresh Python process* — so that nothing of
apprise is loaded and no fork server runs, as after ``responder serve`` starts — opens a copy of
a database preloaded with 1,000 active incidents (steps all due from tomorrow on) and starts
the whole engine on the real ``SystemClock``.  Once its sending process is up (``Sender.ready``;
with code before this benchmark, the child's pipe open) and the engine has run its first rounds
(0.5 s), one single-recipient step is added, due 0.5 s later.  Its message is a json:// post
to ``HttpSink`` in a separate process (shared by every start), which stamps the arrival with the
wall clock.  A second step, due 0.5 s after the first arrived, gives the warm figure beside it.

Reported: due -> arrival of the first message over the starts (median and p99; target p99 <=
30 ms), of the second (warm) one, and how long after ``Engine.start`` the sending process was
up: a message due before then waits for it.

Run alone: ``.venv/bin/python -m tests.bench.first_alert [--starts 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from responder.clock import SystemClock
from responder.engine.runner import Engine
from responder.store import Database
from tests.bench.common import (
    ROOT,
    SECRET,
    Row,
    SinkProcess,
    bench_config,
    far_future,
    log,
    machine,
    ms,
    percentile,
    preload,
    table,
)
from tests.bench.engine import add_steps, measure

NAME = "first-alert"
SETTLE_S = 0.5  # the engine's first rounds, once the sending process is up
LEAD_S = 0.5  # how far ahead of "now" the step falls due
READY_LIMIT_S = 60.0
TARGET_P99 = 0.030


async def one_start(db_path: Path, sink_port: int) -> dict[str, Any]:
    """In a fresh process: start the engine, time its first message (and a second, warm)."""
    sink = SinkProcess()
    sink.port = sink_port  # the sink runs in the parent's process; we only ask it
    cfg = bench_config(db_path, sink_port)
    db = await Database(str(db_path)).open()
    engine = Engine(db, cfg, SystemClock(), SECRET)
    started = time.monotonic()
    ready_after: list[float] = []

    def up() -> bool:  # (before Sender.ready existed, the child's pipe open)
        return engine.dispatcher.sender._conn is not None

    try:
        await engine.start()
        while not up():  # observed from outside: there is no event to wait on
            if time.monotonic() - started > READY_LIMIT_S:
                raise RuntimeError("the sending process did not start")
            await asyncio.sleep(0.005)
        ready_after.append(time.monotonic() - started)
        await asyncio.sleep(SETTLE_S)
        obligations = await db.fetchall(
            "SELECT id, incident_id, kind, seq FROM obligations WHERE status = 'open'"
            " ORDER BY id LIMIT 2"
        )
        for n, ob in enumerate(obligations, start=1):  # the first message, then a warm one
            due = datetime.now(UTC) + timedelta(seconds=LEAD_S)
            await add_steps(engine, [ob], [due], f"bench-first-{n}")
            if await sink.wait_for(n, due.timestamp() + 30) < n:
                raise RuntimeError(f"message {n} did not arrive within 30 s")
        raw = (await measure(db, await sink.arrivals()))["raw"]  # by due time
    finally:
        await engine.stop()
        await db.close()
    first, second = (r["arrived"] - r["due"] for r in raw)
    parts = {  # where the first message's time went
        "fire": raw[0]["fired"] - raw[0]["due"],
        "claim": raw[0]["claimed"] - raw[0]["fired"],
        "send": raw[0]["arrived"] - raw[0]["claimed"],
    }
    return {"first": first, "second": second, "ready": ready_after[0], "parts": parts}


def _template(directory: Path, incidents: int) -> Path:
    """A database preloaded once; every start opens a copy of it."""
    path = directory / "template.sqlite3"

    async def build() -> None:
        db = await Database(str(path)).open()
        try:
            await preload(db, bench_config(path, 9), incidents, start=far_future())
        finally:
            await db.close()

    asyncio.run(build())
    with sqlite3.connect(path) as conn:  # one file to copy: the WAL folded in
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


async def run(starts: int = 10, incidents: int = 1_000) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="responder-bench-first-") as tmp, SinkProcess() as sink:
        log(f"first-alert: preloading {incidents} incidents")
        template = await asyncio.to_thread(_template, Path(tmp), incidents)
        samples: list[dict[str, Any]] = []
        for i in range(1, starts + 1):
            await sink.reset()
            db_path = Path(tmp) / f"start-{i}.sqlite3"
            shutil.copy(template, db_path)
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "tests.bench.first_alert", "--one", str(db_path),
                 str(sink.port)],
                cwd=ROOT, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"start {i} failed:\n{done.stderr}")
            sample = json.loads(done.stdout.strip().splitlines()[-1])
            samples.append(sample)
            log(
                f"  start {i}: first {ms(sample['first'])}, second {ms(sample['second'])},"
                f" sending process up {ms(sample['ready'])} after Engine.start; first:"
                + ", ".join(f" {k} {ms(v)}" for k, v in sample["parts"].items())
            )
    first = [s["first"] for s in samples]
    second = [s["second"] for s in samples]
    ready = [s["ready"] for s in samples]
    p99 = percentile(first, 99)
    return [
        Row(NAME, f"first message after a fresh start, due -> arrival, median ({starts} starts)",
            ms(statistics.median(first))),
        Row(NAME, f"first message after a fresh start, due -> arrival, p99 ({starts} starts)",
            ms(p99), f"<= {TARGET_P99 * 1000:.0f} ms", p99 <= TARGET_P99),
        Row(NAME, "second message (warm), due -> arrival, median / p99",
            f"{ms(statistics.median(second))} / {ms(percentile(second, 99))}"),
        Row(NAME, "sending process up after Engine.start, median / max",
            f"{ms(statistics.median(ready))} / {ms(max(ready))}"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--starts", type=int, default=10)
    p.add_argument("--incidents", type=int, default=1_000)
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    p.add_argument("--one", nargs=2, metavar=("DB", "SINK_PORT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.one:  # one start, in this fresh process: a line of JSON for the parent
        print(json.dumps(asyncio.run(one_start(Path(args.one[0]), int(args.one[1])))))
        return 0
    rows = asyncio.run(run(args.starts, args.incidents))
    print(f"\n{machine()}\n")
    print(table(rows))
    return 1 if args.strict and any(r.ok is False for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
