"""The outbox: queue one message to one person, inside the caller's transaction.

A notification row exists before anything is sent: the dispatcher only ever sends what is
in this table, so a crash between queueing and sending loses nothing.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

import aiosqlite

from responder.secret import ack_token, token_hash
from responder.timeutil import to_db


async def queue(
    tx: aiosqlite.Connection,
    secret: bytes,
    *,
    incident_id: str | None,
    obligation_id: int | None,
    step_id: int | None,
    person_id: str,
    channels: list[str],
    kind: str,
    context: dict[str, Any],
    now: datetime,
) -> int:
    nonce = secrets.token_hex(16)
    cur = await tx.execute(
        "INSERT INTO notifications (incident_id, obligation_id, step_id, person_id, channels,"
        " kind, context, due_at, next_attempt_at, created_at, ack_nonce)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            incident_id,
            obligation_id,
            step_id,
            person_id,
            json.dumps(channels),
            kind,
            json.dumps(context, ensure_ascii=False),
            to_db(now),
            to_db(now),
            to_db(now),
            nonce,
        ),
    )
    nid = cur.lastrowid
    assert nid is not None
    await tx.execute(
        "UPDATE notifications SET ack_hash = ? WHERE id = ?",
        (token_hash(ack_token(secret, nid, nonce)), nid),
    )
    return nid
