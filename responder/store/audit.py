"""The audit log: append-only and hash-chained.

Each entry's hash is SHA-256 over the previous entry's hash and this entry's canonical JSON,
so changing, removing or reordering any entry breaks every hash after it.  Entries are written
in the same transaction as the change they record: no change without its entry, and no entry
for a change that rolled back.  Triggers refuse UPDATE and DELETE; :func:`verify` catches
edits made around them (a tampered file).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite

from responder.timeutil import to_db

GENESIS = "0" * 64


def _digest(
    prev_hash: str, seq: int, at: str, actor: str, action: str, subject: str, data: str
) -> str:
    body = json.dumps(
        [seq, at, actor, action, subject, data], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def append(
    tx: sqlite3.Connection,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    data: dict[str, Any] | None = None,
) -> int:
    """Append one entry inside the caller's write transaction; return its sequence number."""
    last = tx.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq = (last[0] + 1) if last else 1
    prev = last[1] if last else GENESIS
    at_s = to_db(at) or ""
    payload = canonical(data or {})
    digest = _digest(prev, seq, at_s, actor, action, subject, payload)
    tx.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, data, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at_s, actor, action, subject, payload, prev, digest),
    )
    return seq


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    problem: str = ""
    seq: int | None = None
    head: str = ""  # the last entry's hash: record it elsewhere to detect a cut-off tail


async def verify(conn: aiosqlite.Connection, expect: tuple[int, str] | None = None) -> Verdict:
    """Walk the chain from the start; report the first entry that does not fit.

    ``expect`` is a head recorded earlier (its sequence number and hash, as a previous
    verification printed it): that entry must still be there with that hash.  The chain alone
    cannot show that its newest entries were cut off, or that all of it was rewritten."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    async with conn.execute(
        "SELECT seq, at, actor, action, subject, data, prev_hash, hash FROM audit_log ORDER BY seq"
    ) as cur:
        async for seq, at, actor, action, subject, data, prev_hash, digest in cur:
            if seq != expected_seq:
                return Verdict(False, count, f"entry {expected_seq} is missing", expected_seq)
            if prev_hash != prev:
                return Verdict(False, count, f"entry {seq} does not follow entry {seq - 1}", seq)
            if _digest(prev, seq, at, actor, action, subject, data) != digest:
                return Verdict(False, count, f"entry {seq} was changed after it was written", seq)
            if expect is not None and seq == expect[0] and digest != expect[1]:
                return Verdict(
                    False, count, f"entry {seq} is not the one recorded earlier (rewritten)", seq
                )
            prev = digest
            expected_seq += 1
            count += 1
    if expect is not None and count < expect[0]:
        return Verdict(
            False, count, f"entries from {count + 1} to {expect[0]} were removed", count + 1
        )
    return Verdict(True, count, head=prev if count else "")
