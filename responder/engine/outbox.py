"""The outbox: queue one message to one person, inside the caller's transaction.

A notification row exists before anything is sent: the dispatcher only ever sends what is
in this table, so a crash between queueing and sending loses nothing.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from datetime import datetime
from typing import Any

from responder.config import Config
from responder.secret import ack_token, token_hash
from responder.timeutil import to_db


def queue(
    tx: sqlite3.Connection,
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
    cur = tx.execute(
        "INSERT INTO notifications (incident_id, obligation_id, step_id, person_id, channels,"
        " kind, context, due_at, next_attempt_at, created_at, ack_nonce, ack_hash)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
            token_hash(ack_token(secret, nonce)),
        ),
    )
    nid = cur.lastrowid
    assert nid is not None
    return nid


def tell_admins(
    tx: sqlite3.Connection,
    cfg: Config,
    secret: bytes,
    *,
    incident_id: str | None,
    zh: str,
    en: str,
    now: datetime,
) -> int:
    """Queue a watchdog message (about the service itself) to every administrator."""
    queued = 0
    for admin in cfg.alerts.admins:
        person = cfg.person(admin)
        if person is None:
            continue
        queue(
            tx,
            secret,
            incident_id=incident_id,
            obligation_id=None,
            step_id=None,
            person_id=admin,
            channels=list(person.channels),
            kind="watchdog",
            context={"action": zh, "action_en": en},
            now=now,
        )
        queued += 1
    return queued
