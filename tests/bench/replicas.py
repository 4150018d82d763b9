"""Replicas on PostgreSQL against SQLite: a burst of ~1,000 due messages, on real
``responder serve`` processes.

``.venv/bin/python -m tests.bench.replicas [--declarations 340] [--repeat 3]``

For each set-up — SQLite with one replica, PostgreSQL with one, PostgreSQL with two — 340
level-II declarations (three messages each) are sent as fast as the API takes them, spread over
the replicas; the gateway answers at once.  Measured from the database afterwards:

* burst: from the first declaration to the last message recorded sent;
* step lateness: ``fired_at - due_at`` of every step fired (median, p99);
* message lateness: ``sent_at - due_at`` of every message (median, p99).

The PostgreSQL server is the test suite's (``tests/pg_server.py``) with ``fsync`` ON here
(the tests run it off), so commits cost what they cost in production on this disk.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.pg_server import PgServer, fresh_database
from tests.test_replicas import Gateway, Replica, all_sent, declare_on, rows, test_config


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
            for i in range(declarations):
                declare_on(made[i % replicas], token, title=f"基准 {i}")
            if url:
                total = all_sent(url)
                read = lambda sql: rows(url, sql)  # noqa: E731
            else:
                db = root / "responder.sqlite3"
                while True:  # the SQLite replica: read its file
                    with sqlite3.connect(db) as conn:
                        state = dict(
                            conn.execute("SELECT status, COUNT(*) FROM notifications GROUP BY 1")
                        )
                    if set(state) == {"sent"}:
                        total = state["sent"]
                        break
                    time.sleep(0.1)  # polling a real process's work

                def read(sql: str) -> list[tuple[Any, ...]]:
                    with sqlite3.connect(db) as conn:
                        return list(conn.execute(sql))

            last = max(_at(r[0]) for r in read("SELECT sent_at FROM notifications"))
            first = min(_at(r[0]) for r in read("SELECT declared_at FROM incidents"))
            burst = (last - first).total_seconds()
            steps = _lateness(read("SELECT due_at, fired_at FROM steps WHERE fired_at IS NOT NULL"))
            messages = _lateness(
                read("SELECT due_at, sent_at FROM notifications WHERE carried_by IS NULL")
            )
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
          " message lateness median / p99 (ms) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['setup']} | {r['messages']} | {r['burst_s']:.2f} |"
            f" {r['step_median_ms']:.0f} / {r['step_p99_ms']:.0f} |"
            f" {r['message_median_ms']:.0f} / {r['message_p99_ms']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
