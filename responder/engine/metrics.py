"""In-process metrics for ``/metrics``: counters and histograms, nothing more.

The counts that live in the database (incidents, obligations, notifications by status) are
read from it at scrape time; only what is observed in passing (step lateness, send duration,
send outcomes) is kept here.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# What each metric observed here means, for its ``# HELP`` line (add one for a new name: a
# family without it still renders, without the line).
HELP = {
    "send_attempts_total": "sends tried, by channel and outcome (sent or error)",
    "notifications_failed_total": "notifications that failed on every channel (the first"
    " time), by the last channel tried",
    "failed_rounds_total": "later rounds over every channel that failed again, by the last"
    " channel tried",
    "send_duration_seconds": "how long one send took, by channel",
    "step_lateness_seconds": "how late an alert step fired after it fell due",
}


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.n += 1


class Metrics:
    def __init__(self) -> None:
        self.histograms: dict[str, dict[tuple[tuple[str, str], ...], Histogram]] = defaultdict(dict)
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.histograms[name].setdefault(key, Histogram()).observe(value)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.counters[name][key] = self.counters[name].get(key, 0.0) + value

    def render(self) -> list[str]:
        lines: list[str] = []
        for name, series in sorted(self.counters.items()):
            lines += family(f"responder_{name}", "counter", HELP.get(name))
            for key, value in sorted(series.items()):
                lines.append(f"responder_{name}{_labels(key)} {value}")
        for name, hists in sorted(self.histograms.items()):
            lines += family(f"responder_{name}", "histogram", HELP.get(name))
            for key, h in sorted(hists.items()):
                cumulative = 0
                for bound, count in zip(BUCKETS, h.counts, strict=False):
                    cumulative += count
                    lines.append(
                        f"responder_{name}_bucket{_labels(key, le=str(bound))} {cumulative}"
                    )
                lines.append(f"responder_{name}_bucket{_labels(key, le='+Inf')} {h.n}")
                lines.append(f"responder_{name}_sum{_labels(key)} {h.total}")
                lines.append(f"responder_{name}_count{_labels(key)} {h.n}")
        return lines


def family(name: str, kind: str, help_text: str | None) -> list[str]:
    """The lines that open a metric family in Prometheus text: ``# HELP`` (when known), then
    ``# TYPE``.  Help texts here are plain words, with no backslash or line break to escape."""
    help_line = [f"# HELP {name} {help_text}"] if help_text else []
    return [*help_line, f"# TYPE {name} {kind}"]


def _labels(key: tuple[tuple[str, str], ...], **extra: str) -> str:
    items = list(key) + list(extra.items())
    if not items:
        return ""
    body = ",".join(f'{k}="{escape_label(v)}"' for k, v in items)
    return "{" + body + "}"


def escape_label(v: str) -> str:
    """A label value as Prometheus text needs it: a channel name may hold a quote (a quoted
    TOML key), and one unescaped quote makes the whole scrape unreadable."""
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
