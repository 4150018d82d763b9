"""Run every benchmark and print one results table: ``make bench``.

``.venv/bin/python -m tests.bench.run [--repeat N] [--only engine|api] [--strict]``

Each benchmark starts its own temporary database and helper processes, and stops them.  Figures
go to stdout as a Markdown table; progress and the breakdowns behind the figures go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable

from tests.bench import api, engine
from tests.bench.common import Row, code_version, log, machine, table

BENCHES: dict[str, Callable[[], Awaitable[list[Row]]]] = {
    "engine": engine.run,
    "api": api.run,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the responder benchmarks.")
    p.add_argument("--repeat", type=int, default=1, help="run every benchmark N times")
    p.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = args.only or list(BENCHES)
    rows: list[Row] = []
    started = time.monotonic()
    log(f"starting on: {machine()}")
    for round_ in range(1, args.repeat + 1):
        for name in names:
            log(f"== {name} (run {round_} of {args.repeat})")
            for row in asyncio.run(BENCHES[name]()):
                if args.repeat > 1:
                    row.bench = f"{row.bench} #{round_}"
                rows.append(row)
    print(f"\n{machine()}")
    print(f"code: {code_version()}")
    print(
        f"command: {' '.join([sys.executable, '-m', 'tests.bench.run', *(argv or sys.argv[1:])])}"
    )
    print(f"total time: {time.monotonic() - started:.0f} s\n")
    print(table(rows))
    missed = [r for r in rows if r.ok is False]
    if missed:
        print(
            f"\n{len(missed)} target(s) missed: "
            + "; ".join(f"{r.bench} {r.metric}" for r in missed)
        )
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
