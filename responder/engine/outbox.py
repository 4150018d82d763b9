"""The outbox: queue one message to one person, inside the caller's transaction.

A notification row exists before anything is sent: the dispatcher only ever sends what is
in this table, so a crash between queueing and sending loses nothing.

Each message has a priority (:func:`priority_of`): the dispatcher claims the service's own
alarms first, then breach alerts, then routine reminders.  And :data:`STILL_MATTERS` says, in
SQL, whether a message that failed on every channel is still worth another round.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from responder.config import Config
from responder.secret import ack_token, token_hash
from responder.timeutil import to_db

# Claim order (lower first): see migration 008.
WATCHDOG, BREACH, ROUTINE = 0, 1, 2
BREACH_KINDS = ("deadline", "repeat")
# A message about the service itself (no obligation) that cannot be delivered is tried again
# for this long; one about an obligation, for as long as the obligation is pending.
WATCHDOG_RETRY_HOURS = 24


def priority_of(kind: str, breached: bool = False) -> int:
    """Where a message stands in the dispatcher's queue: the administrators' alarms about the
    service, then breach alerts (an obligation past its deadline), then the rest."""
    if kind == "watchdog":
        return WATCHDOG
    return BREACH if breached or kind in BREACH_KINDS else ROUTINE


# Why a failed message ``n`` needs no further round, as a SQL expression (NULL: it still
# matters).  First match wins.  An acknowledgement counts when it came from this message, or
# from another about the same obligation acknowledged after this one was queued (the person
# knows the news); a later alert delivered means a later step reached the person (one sent
# beside this one, on another channel for the same step, does not: it is the same news on a
# channel that may not be read).  A message about the service itself (no obligation) is told
# once it reached the administrator on one of their channels (it goes on each at once), and has
# no round that would start more than WATCHDOG_RETRY_HOURS after it was queued.  A message that
# carries other obligations (see :func:`queue`) matters while one of them is still to be done,
# even when its own obligation is met or a later alert about it was delivered.
WHY_MOOT = f"""CASE
    WHEN n.acked_at IS NOT NULL THEN 'acknowledged'
    WHEN n.obligation_id IS NULL THEN CASE
        WHEN EXISTS (SELECT 1 FROM notifications s WHERE s.obligation_id IS NULL
            AND s.person_id = n.person_id AND s.created_at = n.created_at
            AND s.context = n.context AND s.status = 'sent' AND s.id != n.id)
            THEN 'delivered on another channel'
        WHEN n.retry_at > strftime('%Y-%m-%dT%H:%M:%fZ', n.created_at,
            '+{WATCHDOG_RETRY_HOURS} hours') THEN 'expired' END
    WHEN EXISTS (SELECT 1 FROM notifications a WHERE a.obligation_id = n.obligation_id
        AND a.person_id = n.person_id AND a.acked_at >= n.created_at) THEN 'acknowledged'
    WHEN EXISTS (SELECT 1 FROM incidents i WHERE i.id = n.incident_id AND i.status = 'closed')
        THEN 'incident closed'
    WHEN EXISTS (SELECT 1 FROM notifications c JOIN obligations co ON co.id = c.obligation_id
        WHERE c.carried_by = n.id AND c.status != 'cancelled' AND co.met_at IS NULL
        AND co.status != 'waived') THEN NULL
    WHEN EXISTS (SELECT 1 FROM obligations o WHERE o.id = n.obligation_id
        AND o.met_at IS NOT NULL) THEN 'obligation met'
    WHEN EXISTS (SELECT 1 FROM obligations o WHERE o.id = n.obligation_id
        AND o.status = 'waived') THEN 'obligation waived'
    WHEN EXISTS (SELECT 1 FROM notifications l WHERE l.obligation_id = n.obligation_id
        AND l.person_id = n.person_id AND l.id > n.id AND l.status = 'sent'
        AND l.step_id IS DISTINCT FROM n.step_id) THEN 'a later alert was delivered'
    END"""
STILL_MATTERS = f"({WHY_MOOT}) IS NULL"


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
    priority: int | None = None,
    carried_by: int | None = None,
) -> int:
    """Queue one message; ``priority`` defaults to what its kind says (:func:`priority_of`).
    With ``carried_by``, the row is an obligation's part of another message (its carrier), which
    alone is sent: see :func:`follow_carriers`."""
    nonce = secrets.token_hex(16)
    cur = tx.execute(
        "INSERT INTO notifications (incident_id, obligation_id, step_id, person_id, channels,"
        " kind, context, due_at, next_attempt_at, created_at, ack_nonce, ack_hash, priority,"
        " carried_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
            priority_of(kind) if priority is None else priority,
            carried_by,
        ),
    )
    nid = cur.lastrowid
    assert nid is not None
    return nid


# What a carried row takes from its carrier: where the message is, how it went, whether the
# person acknowledged it.  Not its lease, rounds or next round (retry_at): only the carrier is
# claimed and tried again, and /healthz counts failing messages, not the obligations in them.
# A carried row already cancelled stays so: its obligation was met or waived, or the person
# acknowledged it elsewhere, and the message no longer speaks of it (see compose).
_FOLLOW = (
    "UPDATE notifications AS c SET status = p.status, channel_index = p.channel_index,"
    " attempt = p.attempt, next_attempt_at = p.next_attempt_at, sent_at = p.sent_at,"
    " sent_channel = p.sent_channel, last_error = p.last_error, acked_at = p.acked_at,"
    " retry_ended = p.retry_ended FROM notifications AS p"
    " WHERE p.id = c.carried_by AND c.status != 'cancelled' AND "
)


def follow_carriers(tx: sqlite3.Connection, carrier_ids: Iterable[int]) -> int:
    """Bring the rows these messages carry to their carrier's state (inside the caller's
    transaction, after the carriers changed).  Returns how many rows moved."""
    ids = sorted(set(carrier_ids))
    moved = 0
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        moved += tx.execute(_FOLLOW + f"c.carried_by IN ({marks})", chunk).rowcount
    return moved


def follow_all_carriers(tx: sqlite3.Connection, status: str) -> int:
    """:func:`follow_carriers` for every carried row in ``status`` (after a statement that moved
    carriers without naming them: the recovery after a crash)."""
    return tx.execute(_FOLLOW + "c.status = ?", (status,)).rowcount


def tell_admins(
    tx: sqlite3.Connection,
    cfg: Config,
    secret: bytes,
    *,
    incident_id: str | None,
    zh: str,
    en: str,
    now: datetime,
    every_channel: bool = False,
) -> int:
    """Queue a watchdog message (about the service itself) to every administrator: one
    message walking down each one's channels, or with ``every_channel`` one on each channel
    at once (for news that cannot wait for a failover: a person not reached at all)."""
    queued = 0
    for admin in cfg.alerts.admins:
        person = cfg.person(admin)
        if person is None:
            continue
        order = list(person.channels)
        for channels in [[c] for c in order] if every_channel else [order]:
            queue(
                tx,
                secret,
                incident_id=incident_id,
                obligation_id=None,
                step_id=None,
                person_id=admin,
                channels=channels,
                kind="watchdog",
                context={"action": zh, "action_en": en},
                now=now,
            )
            queued += 1
    return queued
