"""Replicas on PostgreSQL against SQLite: a burst of ~1,000 messages due at one instant, on
real ``responder serve`` processes.

``.venv/bin/python -m tests.bench.replicas [--declarations 340] [--repeat 3]``

For each set-up — SQLite with one replica, PostgreSQL with one, PostgreSQL with two — 340
level-II incidents are declared (spread over the replicas) that all occurred at ``T - 4 h``,
``T`` a minute ahead: what falls due at declaration goes out then, and at ``T`` every
incident's "1 h before the release deadline" reminder falls due at once — about three
messages an incident, ~1,000 together.  The gateway answers at once.  Measured from the
database afterwards, for what fell due at ``T``:

* burst: from ``T`` to the last of those messages recorded sent;
* step lateness: ``fired_at - due_at`` of the steps due at ``T`` (median, p99);
* message lateness: ``sent_at - due_at`` of the messages due at ``T`` (median, p99);
* and the mean time one declaration took to answer (sequential, one client).

The PostgreSQL server is the test suite's (``tests/pg_server.py``) with ``fsync`` ON here
(the tests run it off), so commits cost what they cost on this disk.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from responder.timeutil import to_db
from tests.pg_server import PgServer, fresh_database
from tests.test_replicas import Gateway, Replica, declare_on, rows, test_config

LEAD_S = 60  # T: the instant everything falls due, this far after the first declaration
CST = timezone(timedelta(hours=8))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _lateness(pairs: list[tuple[Any, ...]]) -> tuple[float, float]:
    late = [(_at(done) - _at(due)).total_seconds() for due, done in pairs if done]
    return statistics.median(late), _p99(late)


def one_run(label: str, url: str | None, replicas: int, declarations: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="responder-bench-") as tmp:
        root = Path(tmp)
        gateway = Gateway()
        config = test_config(root)
        made: list[Replica] = []
        try:
            for i in range(replicas):
                folder = root / f"r{i}"
                folder.mkdir()
                database = url or str(root / "responder.sqlite3")
                made.append(Replica(folder, database, config, gateway.address))
            token = made[0].token()
            for r in made:
                r.start()
            started = time.monotonic()
            at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=LEAD_S)
            occurred = (at - timedelta(hours=4)).astimezone(CST).isoformat()
            for i in range(declarations):
                declare_on(made[i % replicas], token, title=f"基准 {i}", occurred_at=occurred)
            declaring = time.monotonic() - started
            assert datetime.now(UTC) < at, "the declarations took longer than the lead"
            due = to_db(at)
            if url:
                read = lambda sql: rows(url, sql)  # noqa: E731
            else:
                db = root / "responder.sqlite3"

                def read(sql: str) -> list[tuple[Any, ...]]:
                    with sqlite3.connect(db) as conn:
                        return list(conn.execute(sql))

            burst_sql = (
                f"SELECT due_at, sent_at, status FROM notifications WHERE due_at >= '{due}'"
                " AND carried_by IS NULL"
            )
            while True:  # polling real processes' work in their database
                time.sleep(0.5)
                if datetime.now(UTC) < at + timedelta(seconds=2):
                    continue
                burst_rows = read(burst_sql)
                if burst_rows and all(r[2] == "sent" for r in burst_rows):
                    pending = read(
                        f"SELECT COUNT(*) FROM steps WHERE status = 'pending' AND due_at <= '{due}'"
                    )
                    if pending[0][0] == 0:
                        break
            total = len(burst_rows)
            last = max(_at(r[1]) for r in burst_rows)
            burst = (last - at).total_seconds()
            steps = _lateness(read(f"SELECT due_at, fired_at FROM steps WHERE due_at = '{due}'"))
            messages = _lateness([(r[0], r[1]) for r in burst_rows])
            wall = time.monotonic() - started
            for r in made:
                r.stop()
        finally:
            for r in made:
                r.kill()
            gateway.close()
    return {
        "setup": label,
        "messages": total,
        "burst_s": burst,
        "wall_s": wall,
        "declare_ms": declaring / declarations * 1000,
        "step_median_ms": steps[0] * 1000,
        "step_p99_ms": steps[1] * 1000,
        "message_median_ms": messages[0] * 1000,
        "message_p99_ms": messages[1] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--declarations", type=int, default=340)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    server = PgServer()
    server.fsync = True
    server.start()
    results: list[dict[str, Any]] = []
    try:
        for _ in range(args.repeat):
            for label, store, n in (
                ("SQLite, 1 replica", None, 1),
                ("PostgreSQL, 1 replica", "pg", 1),
                ("PostgreSQL, 2 replicas", "pg", 2),
            ):
                url = fresh_database(server.url()) if store else None
                result = one_run(label, url, n, args.declarations)
                print(result, file=sys.stderr, flush=True)
                results.append(result)
    finally:
        server.stop()
    print("| set-up | messages | burst (s) | step lateness median / p99 (ms) |"
          " message lateness median / p99 (ms) | one declaration (ms, mean) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['setup']} | {r['messages']} | {r['burst_s']:.2f} |"
            f" {r['step_median_ms']:.0f} / {r['step_p99_ms']:.0f} |"
            f" {r['message_median_ms']:.0f} / {r['message_p99_ms']:.0f} |"
            f" {r['declare_ms']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
