"""Idempotency keys: a change sent twice is made once, and the second request gets the first answer.

An integrating system (a city emergency platform, a duty roster system) that times out waiting
for an answer cannot know whether its request was recorded.  It sends the request again with
the same ``Idempotency-Key`` header.  The key is looked up and stored inside the change's own
write transaction (see ``Ops._commit``), so of two identical requests racing each other exactly
one changes anything:

1. The key is new: the change runs, and its answer is stored with the key.
2. The key is known for the same request (same operation, same path, same body): nothing runs;
   the stored answer is given again, and the API says so (``Idempotent-Replayed: true``).
3. The key is known for a different request: refused (422 ``idempotency_key_reused``).

Keys belong to one user: two users' keys of the same name never meet.  They are kept (one
small row per keyed change), so a retry days later is still recognised.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from responder.errors import BadInput
from responder.store import audit
from responder.timeutil import to_db

DECLARE = "POST /incidents"


@dataclass
class Once:
    """One keyed request: who sent it, its key, and what it asked for."""

    actor: str
    key: str
    operation: str  # method and route, e.g. "POST /incidents/{incident_id}/level"
    request_hash: str
    replayed: bool = False  # set when the answer came from an earlier request

    @classmethod
    def of(
        cls,
        actor: str,
        key: str,
        operation: str,
        body: dict[str, Any],
        path: dict[str, str] | None = None,
    ) -> Once:
        # Without path parameters (a declaration) the hash is of the body alone, as keys
        # recorded before other changes took keys were.
        payload: Any = {"path": path, "body": body} if path else body
        digest = hashlib.sha256(audit.canonical(payload).encode("utf-8")).hexdigest()
        return cls(actor, key, operation, digest)


def replay(tx: sqlite3.Connection, once: Once) -> Any | None:
    """The stored answer if this key was used before for the same request; None if the key is
    new; refused if it was used for a different request."""
    row = tx.execute(
        "SELECT operation, request_hash, incident_id, result FROM idempotency_keys"
        " WHERE actor = ? AND key = ?",
        (once.actor, once.key),
    ).fetchone()
    if row is None:
        return None
    if row["operation"] != once.operation or row["request_hash"] != once.request_hash:
        raise BadInput(
            "idempotency_key_reused",
            f"Idempotency-Key 已用于另一个请求(事件 {row['incident_id']}),每个新请求请使用新的 Key",
            f"this Idempotency-Key was used for a different request (incident"
            f" {row['incident_id']}); use a new key for each new request",
        )
    once.replayed = True
    return json.loads(row["result"]) if row["result"] is not None else row["incident_id"]


def remember(
    tx: sqlite3.Connection, once: Once, incident_id: str, result: Any, now: datetime
) -> None:
    """Store the key with the answer, in the transaction that made the change."""
    tx.execute(
        "INSERT INTO idempotency_keys (actor, key, operation, request_hash, incident_id, result,"
        " created_at) VALUES (?,?,?,?,?,?,?)",
        (
            once.actor,
            once.key,
            once.operation,
            once.request_hash,
            incident_id,
            json.dumps(result, ensure_ascii=False),
            to_db(now),
        ),
    )
