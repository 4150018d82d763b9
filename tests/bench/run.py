"""Run every benchmark and print one results table: ``make bench``.

``.venv/bin/python -m tests.bench.run [--repeat N] [--only engine|api|first-alert] [--strict]``; with ``--repeat``
the table ends with the median of every targeted time over the runs, and the verdict (and
``--strict``) goes by the medians.

Each benchmark starts its own temporary database and helper processes, and stops them.  Figures
go to stdout as a Markdown table; progress and the breakdowns behind the figures go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from tests.bench import api, engine, first_alert
from tests.bench.common import Row, code_version, log, machine, table

BENCHES: dict[str, Callable[[], Awaitable[list[Row]]]] = {
    "engine": engine.run,
    "api": api.run,
    "first-alert": first_alert.run,
}


_SECONDS = re.compile(r"^(?:<= )?([0-9.]+) (ms|s)$")


def _seconds(text: str) -> float | None:
    m = _SECONDS.match(text)
    return None if m is None else float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def medians(runs: list[list[Row]]) -> list[Row]:
    """For every targeted time figure, its median over the runs and the verdict on it.

    These machines are noisy (the API figure moves ±30 % from one minute to the next): a
    median of several runs says more than any one of them."""
    out = []
    for first in runs[0]:
        if first.ok is None or (bound := _seconds(first.target)) is None:
            continue
        values = [
            v
            for run in runs
            for r in run
            if r.bench == first.bench and r.metric == first.metric
            if (v := _seconds(r.value)) is not None
        ]
        if len(values) == len(runs):
            m = statistics.median(values)
            value = f"{m * 1000:.1f} ms" if m < 1 else f"{m:.2f} s"
            out.append(
                Row(f"{first.bench} median of {len(runs)}", first.metric, value, first.target,
                    m <= bound)
            )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the responder benchmarks.")
    p.add_argument("--repeat", type=int, default=1, help="run every benchmark N times")
    p.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = args.only or list(BENCHES)
    rows: list[Row] = []
    runs: dict[str, list[list[Row]]] = {name: [] for name in names}
    started = time.monotonic()
    log(f"starting on: {machine()}")
    for round_ in range(1, args.repeat + 1):
        for name in names:
            log(f"== {name} (run {round_} of {args.repeat})")
            run = asyncio.run(BENCHES[name]())
            runs[name].append([Row(r.bench, r.metric, r.value, r.target, r.ok) for r in run])
            for row in run:
                if args.repeat > 1:
                    row.bench = f"{row.bench} #{round_}"
                rows.append(row)
    if args.repeat > 1:
        for name in names:
            rows += medians(runs[name])
    print(f"\n{machine()}")
    print(f"code: {code_version()}")
    print(
        f"command: {' '.join([sys.executable, '-m', 'tests.bench.run', *(argv or sys.argv[1:])])}"
    )
    print(f"total time: {time.monotonic() - started:.0f} s\n")
    print(table(rows))
    # With --repeat, the verdict is the median's; the single runs are shown for the record.
    judged = [r for r in rows if "median of" in r.bench] if args.repeat > 1 else rows
    missed = [r for r in judged if r.ok is False]
    if missed:
        print(
            f"\n{len(missed)} target(s) missed: "
            + "; ".join(f"{r.bench} {r.metric}" for r in missed)
        )
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
