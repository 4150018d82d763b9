"""The store's read path: a row committed is seen by the very next read."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from responder.store import Database


async def test_a_committed_row_is_seen_by_the_next_read_under_concurrent_reads(
    db: Database,
) -> None:
    """A read that leaves its statement open between awaits pins an old snapshot on the
    shared reader connection; an incident just declared then answered 404 under load."""

    def job(tx: sqlite3.Connection) -> Any:
        tx.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?)", [(f"c{i}", i) for i in range(500)]
        )

    await db.transact(job)

    async def busy_reader() -> None:
        for _ in range(20):
            await db.fetchone("SELECT name FROM counters ORDER BY name")  # many rows, first one

    async def write_then_read(i: int) -> bool:
        def job(tx: sqlite3.Connection) -> Any:
            tx.execute("INSERT INTO counters (name, value) VALUES (?, ?)", (f"new{i}", i))

        await db.transact(job)
        return (
            await db.fetchone("SELECT value FROM counters WHERE name = ?", (f"new{i}",)) is not None
        )

    for round_ in range(10):
        results = await asyncio.gather(
            busy_reader(), busy_reader(), *(write_then_read(round_ * 10 + i) for i in range(10))
        )
        assert all(results[2:]), f"a committed row was not visible in round {round_}"
