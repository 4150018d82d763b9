"""Seals: what a decision or a report rested on, fixed in the audit log so that an edit of any
evidence row afterwards is found by ``responder verify-audit``.

The audit chain proves its own entries; the evidence (steps, messages, attempts…) lives in
other tables.  A seal is a digest of each evidence row, written into the audit entry of the
decision or report that used it.  Verification recomputes each sealed row's digest: a row
changed or removed since is named.

A row may still rightly change after it was sealed: a message still being sent gets its
outcome, an acknowledgement comes in, an open duty is met.  So a digest covers every column
of the row — an empty one (NULL) as empty, so that a value written into it later is found —
minus the columns that move while the row is still live, and minus the few that are filled
in once whatever the row's state (an acknowledgement) while they are still empty.  The seal
lists the columns it left out, and verification reads that list from the seal: seals made
before empty columns were covered (they listed every NULL column as left out) verify as they
always did.  A later change to a covered column is an edit nobody may make.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiosqlite

# Per table: is the row still live, and the columns that move while it is (those it fills
# in as it settles, from NULL, among them: a duty's met_at, a step's fired_at).
_Live = Callable[[Any], bool]
MOVING: dict[str, tuple[_Live, frozenset[str]]] = {
    "incidents": (
        lambda r: r["status"] == "active",
        frozenset({"level", "status", "closed_at", "close_reason"}),
    ),
    "obligations": (
        lambda r: r["met_at"] is None and r["status"] in ("open", "breached"),
        frozenset(
            {
                "status",
                "breached_at",
                "recorded_late",
                "met_at",
                "met_recorded_at",
                "waived_at",
                "waived_reason",
            }
        ),
    ),
    "steps": (
        lambda r: r["status"] == "pending",
        frozenset({"status", "fired_at", "cancelled_at"}),
    ),
    # A message that failed on every channel is still live while its next round is planned
    # (retry_at): the round requeues it, or it ends, saying why (retry_ended).
    "notifications": (
        lambda r: (
            r["status"] in ("queued", "sending")
            or (r["status"] == "failed" and r["retry_at"] is not None)
        ),
        frozenset(
            {
                "status",
                "channel_index",
                "attempt",
                "next_attempt_at",
                "last_error",
                "sent_at",
                "sent_channel",
                "rounds",
                "retry_at",
                "retry_ended",
            }
        ),
    ),
    "attempts": (
        lambda r: r["outcome"] == "started",
        frozenset({"outcome", "error", "finished_at"}),
    ),
    "press_conferences": (
        lambda r: r["status"] == "scheduled",
        frozenset(
            {
                "status",
                "scheduled_at",
                "venue",
                "spokesperson",
                "notes",
                "held_at",
                "principal_leader_spoke",
                "recorded_late",
            }
        ),
    ),
    "accountability_corrections": (
        lambda r: r["status"] == "open",
        frozenset(
            {
                "status",
                "report_received_at",
                "report_text",
                "report_recorded_by",
                "report_recorded_at",
                "withdrawn_at",
            }
        ),
    ),
    "accountability_records": (
        lambda r: r["met_at"] is None,
        frozenset({"evidence", "overrun_s", "met_at"}),
    ),
}
# Columns that move whatever the row's state: a lease; a record's summary of its current
# decision (the decisions themselves are sealed, and never change).
ALWAYS_MOVING: dict[str, frozenset[str]] = {
    "notifications": frozenset({"lease_until"}),
    "accountability_records": frozenset(
        {
            "proposed_measure",
            "decided_measure",
            "decision_reason",
            "decided_by",
            "decided_at",
            "status",
        }
    ),
}
# Columns filled in once, at any time, while they are empty: an acknowledgement of a message
# delivered long ago.  Once filled, they are covered like any other.
FILLED_LATER: dict[str, frozenset[str]] = {
    "notifications": frozenset({"acked_at"}),
}
# Columns added to an evidence table after seals began (by a later migration): a row sealed
# before had no such column, so the digest leaves one out while it is NULL (as every older
# row's is).  A value written into it later is covered, so it changes the digest all the same.
ADDED_LATER: dict[str, frozenset[str]] = {
    "notifications": frozenset({"carried_by"}),  # migration 010
}
TABLES = frozenset(
    {
        "incidents",
        "obligations",
        "steps",
        "notifications",
        "attempts",
        "releases",
        "press_conferences",
        "level_changes",
        "accountability_records",
        "accountability_decisions",
        "accountability_interviews",
        "accountability_corrections",
    }
)


def _left_out(table: str, row: Any) -> list[str]:
    live, moving = MOVING.get(table, (lambda r: False, frozenset()))
    out = {k for k in FILLED_LATER.get(table, frozenset()) if row[k] is None}
    out |= ALWAYS_MOVING.get(table, frozenset())
    if live(row):
        out |= moving
    return sorted(out & set(row.keys()))


def _digest(row: Any, left_out: Iterable[str], table: str = "") -> str:
    keys = set(row.keys())
    skip = set(left_out) | {k for k in ADDED_LATER.get(table, ()) if k in keys and row[k] is None}
    body = [[k, row[k]] for k in sorted(row.keys()) if k not in skip]
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def seal(rows: Mapping[str, Iterable[Any]]) -> dict[str, list[Any]]:
    """``{"table:id": [digest, [columns left out]]}`` for every row given."""
    out: dict[str, list[Any]] = {}
    for table, table_rows in rows.items():
        assert table in TABLES, table
        for r in table_rows:
            left = _left_out(table, r)
            out[f"{table}:{r['id']}"] = [_digest(r, left, table), left]
    return out


def digest_of(sealed: Mapping[str, Any]) -> str:
    """One SHA-256 over a whole seal: what a decision row keeps of its evidence."""
    text = json.dumps(sealed, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def check(conn: aiosqlite.Connection) -> list[str]:
    """Every sealed row that changed or went since its seal, as 'entry N: table:id …'.
    Reads each sealed row again (one query per row: seals cover what people decided on, a
    few hundred rows each).  ``conn``: a reader (``Database.reader``, or ``verify-audit``'s
    read-only connection)."""
    conn.row_factory = sqlite3.Row
    problems: list[str] = []
    entries = await conn.execute_fetchall(
        "SELECT seq, data FROM audit_log WHERE json_extract(data, '$.sealed') IS NOT NULL"
        " ORDER BY seq"
    )
    for seq, data in entries:
        sealed = json.loads(data).get("sealed")
        if not isinstance(sealed, dict):
            continue
        for key, (digest, left_out) in sealed.items():
            table, _, row_id = key.partition(":")
            if table not in TABLES:
                problems.append(f"entry {seq}: {key} is not evidence")
                continue
            rows = await conn.execute_fetchall(f"SELECT * FROM {table} WHERE id = ?", (row_id,))
            row = next(iter(rows), None)
            if row is None:
                problems.append(f"entry {seq}: {key} was removed after it was sealed")
            elif _digest(row, left_out, table) != digest:
                problems.append(f"entry {seq}: {key} was changed after it was sealed")
    return problems
