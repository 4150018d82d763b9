"""Telling the administrators, a week ahead, that an API token will end.

A token given an end (``responder token create --days N``) stops working by itself; an
integration using it (the city platform declaring incidents) would then stop at whatever hour
that falls.  So, checked with the watchdog's rounds:

1. Read whether any active token (not revoked, its user enabled) ends within ``NOTICE`` and
   has not been the subject of a warning — a read, so the usual answer costs no write.
2. If so, in one transaction: mark those tokens warned (a conditional UPDATE, so the warning
   goes out once however often this runs), queue one message per administrator and token
   (the outbox), and audit it.

A token whose whole life is shorter than ``NOTICE`` is not warned of: whoever made it for a
few days knows when it ends.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta

from responder.config import Config
from responder.engine import outbox
from responder.store import Database, audit
from responder.timeutil import from_db, show, to_db

log = logging.getLogger("responder.watchdog")
NOTICE = timedelta(days=7)

_ENDING = (
    " FROM tokens t JOIN users u ON u.id = t.user_id"
    " WHERE t.end_warned_at IS NULL AND t.revoked_at IS NULL AND u.disabled = 0"
    " AND t.expires_at > ? AND t.expires_at <= ?"
    " AND julianday(t.expires_at) - julianday(t.created_at) > ?"
)


async def warn_token_ends(db: Database, cfg: Config, secret: bytes, now: datetime) -> int:
    """Warn of the tokens ending within ``NOTICE``; return how many messages were queued."""
    window = (to_db(now), to_db(now + NOTICE), NOTICE.days)
    if await db.fetchone("SELECT 1" + _ENDING + " LIMIT 1", window) is None:
        return 0

    def warn(tx: sqlite3.Connection) -> int:
        ending = tx.execute(
            "SELECT t.id, t.name, t.expires_at, u.username" + _ENDING + " ORDER BY t.id", window
        ).fetchall()
        queued = 0
        for token in ending:
            won = tx.execute(
                "UPDATE tokens SET end_warned_at = ? WHERE id = ? AND end_warned_at IS NULL",
                (to_db(now), token["id"]),
            ).rowcount
            if not won:
                continue
            end = show(from_db(token["expires_at"]), cfg.tz)
            name = token["name"][:20]  # free text from token create --name; an SMS is short
            queued += outbox.tell_admins(
                tx,
                cfg,
                secret,
                incident_id=None,
                zh=f"API 令牌 {token['id']}({name})将于 {end} 到期,请提前换发",
                en=f"API token {token['id']} ({token['username']}: {name}) ends at {end}:"
                " create a new one (responder token create) and switch to it before then",
                now=now,
            )
            audit.append(
                tx,
                now,
                "watchdog",
                "token.end_warned",
                str(token["id"]),
                {"expires_at": token["expires_at"]},
            )
            log.warning("API token %s ends at %s; administrators told", token["id"], end)
        return queued

    return await db.transact(warn)
