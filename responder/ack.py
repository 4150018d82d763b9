"""Acknowledgement: the link in a message → a confirm page → POST → recorded.

GET never acknowledges (link previews and mail scanners open links); only the POST from the
confirm page does.  A token is looked up by its hash and can acknowledge only its own
notification.  Acknowledging stops further repeats of that obligation to that person;
escalation to everybody else goes on until the obligation is met.  A message that told of
several obligations at once (see :func:`responder.engine.fire.queue_merged`) is acknowledged
for each of them.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from responder.clock import Clock
from responder.engine import outbox
from responder.errors import NotFound
from responder.secret import token_hash
from responder.store import Database, audit
from responder.timeutil import to_db

_NOT_FOUND = NotFound(
    "ack_not_found",
    "确认链接无效或已失效。如需帮助,请联系值班室。",
    "This acknowledgement link is not valid. Please call the duty desk if you need help.",
)


# A token is 32 URL-safe base64 characters (secret.ack_token).  What follows it in a path was
# put there by a messenger that took the punctuation after a bare link into it (".../TOKEN." or
# ".../TOKEN)"), or by a chat that shows our markdown "[确认收到](https://…/ack/TOKEN)" as text.
_TOKEN = re.compile(r"([A-Za-z0-9_-]{32})(?![A-Za-z0-9_-])")


async def find(db: Database, token: str) -> Any:
    m = _TOKEN.match(token or "")
    if m is None or len(token) > 100:
        raise _NOT_FOUND
    token = m.group(1)
    row = await db.fetchone(
        "SELECT n.*, i.title, i.level, i.drill, i.status AS incident_status,"
        " o.name AS obligation_name, o.name_en AS obligation_name_en, o.deadline, o.status AS"
        " obligation_status, o.met_at AS obligation_met_at, o.kind AS obligation_kind"
        " FROM notifications n LEFT JOIN incidents i ON i.id = n.incident_id"
        " LEFT JOIN obligations o ON o.id = n.obligation_id WHERE n.ack_hash = ?",
        (token_hash(token),),
    )
    if row is None:
        raise _NOT_FOUND
    # The other obligations the message told of, still spoken of (not met meanwhile).
    carried = await db.fetchall(
        "SELECT c.obligation_id, o.name, o.name_en, o.deadline FROM notifications c"
        " JOIN obligations o ON o.id = c.obligation_id"
        " WHERE c.carried_by = ? AND c.status != 'cancelled' ORDER BY o.deadline, o.id",
        (row["id"],),
    )
    return {**dict(row), "carries": [dict(c) for c in carried]}


async def acknowledge(db: Database, clock: Clock, token: str) -> tuple[Any, bool]:
    """Record the acknowledgement.  Returns (notification, newly acknowledged)."""
    row = await find(db, token)
    now = clock.now()

    def record(tx: sqlite3.Connection) -> bool:
        fresh = (
            tx.execute(
                "UPDATE notifications SET acked_at = ? WHERE id = ? AND acked_at IS NULL",
                (to_db(now), row["id"]),
            ).rowcount
            == 1
        )
        if not fresh:
            return False
        outbox.follow_carriers(tx, [row["id"]])  # each obligation the message told of
        told = [c["obligation_id"] for c in row["carries"]]
        cancelled = 0
        if row["obligation_id"] is not None:
            cancelled = _cancel_repeats(tx, row["person_id"], [row["obligation_id"], *told])
        audit.append(
            tx,
            now,
            f"person:{row['person_id']}",
            "notification.acknowledged",
            row["incident_id"] or "-",
            {
                "notification": row["id"],
                "obligation": row["obligation_id"],
                **({"also_obligations": told} if told else {}),
                "repeats_cancelled": cancelled,
            },
        )
        return True

    fresh = await db.transact(record)
    return await find(db, token), fresh


def _cancel_repeats(tx: sqlite3.Connection, person_id: str, obligation_ids: list[int]) -> int:
    """A repeat already queued (waiting for a retry) about what the person acknowledged is a
    further repeat too: cancelled — unless it also carries news of another obligation."""
    marks = ",".join("?" * len(obligation_ids))
    cancelled = tx.execute(
        "UPDATE notifications SET status = 'cancelled', last_error = 'acknowledged'"
        f" WHERE obligation_id IN ({marks}) AND person_id = ? AND kind = 'repeat'"
        " AND status = 'queued' AND NOT EXISTS (SELECT 1 FROM notifications c"
        "  WHERE c.carried_by = notifications.id AND c.status = 'queued'"
        f"  AND c.obligation_id NOT IN ({marks})) RETURNING id",
        (*obligation_ids, person_id, *obligation_ids),
    ).fetchall()
    outbox.follow_carriers(tx, [r[0] for r in cancelled])
    return len(cancelled)
