"""Users, passwords and API tokens.

Passwords: scrypt (memory-hard, in the standard library; n=2**14, r=8 → 16 MiB per guess).
Tokens: 256 random bits shown once; only their SHA-256 is stored, so a copied database
does not give away a working token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from responder.errors import BadInput, Conflict, NotFound, Unavailable
from responder.secret import token_hash
from responder.store import Database, audit
from responder.timeutil import from_db, to_db

log = logging.getLogger("responder.auth")
ROLES = ("duty_officer", "reviewer", "admin", "viewer")
_N, _R, _P = 2**14, 8, 1
TOKEN_PREFIX = "rsp_"
USE_NOTED_EVERY = timedelta(hours=1)  # how finely a token's last use is kept
MAX_TOKEN_DAYS = 3650


class TokenExpired(Exception):
    """A token that was valid until ``expired_at``: the caller is told, not just refused."""

    def __init__(self, expired_at: datetime) -> None:
        super().__init__(f"token expired at {expired_at.isoformat()}")
        self.expired_at = expired_at


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 1024 * 1024)
    return (
        f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    )


_DUMMY_SALT = b"responder-dummy!"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        # The same work as a real check, so the answer's timing does not tell whether the
        # username exists (or has a password).
        hashlib.scrypt(
            password.encode(), salt=_DUMMY_SALT, n=_N, r=_R, p=_P, maxmem=64 * 1024 * 1024
        )
        return False
    _, n, r, p, salt, key = stored.split("$")
    got = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        maxmem=64 * 1024 * 1024,
    )
    return hmac.compare_digest(got, base64.b64decode(key))


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def add_user(
    db: Database, username: str, role: str, password: str | None, now: datetime, actor: str
) -> int:
    if role not in ROLES:
        raise BadInput(
            "unknown_role",
            f"未知角色“{role}”(可选:{', '.join(ROLES)})",
            f"unknown role '{role}' (known: {', '.join(ROLES)})",
        )
    if (
        not username
        or len(username) > 64
        or not username.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        raise BadInput(
            "bad_username",
            "用户名只能包含字母、数字、点、横线和下划线,最长 64 个字符",
            "a username has letters, digits, dots, dashes and underscores, at most 64 characters",
        )
    if password is not None:
        _check_password(password)
    password_hash = hash_password(password) if password else None  # slow: not in the job

    def add(tx: sqlite3.Connection) -> int:
        # Case aside too: "chen" and "CHEN" would be two look-alike accounts in every list.
        same = tx.execute(
            "SELECT username FROM users WHERE lower(username) = lower(?)", (username,)
        ).fetchone()
        if same and same[0] == username:
            raise Conflict("user_exists", f"用户 {username} 已存在", f"user {username} exists")
        if same:
            raise Conflict(
                "user_exists",
                f"已有用户 {same[0]},与 {username} 只差大小写;请换一个用户名",
                f"user {same[0]} exists, which differs from {username} only in case;"
                " choose another name",
            )
        cur = tx.execute(
            "INSERT INTO users (username, role, password_hash, created_at) VALUES (?,?,?,?)",
            (username, role, password_hash, to_db(now)),
        )
        audit.append(tx, now, actor, "user.added", username, {"role": role})
        assert cur.lastrowid is not None
        return cur.lastrowid

    return await db.transact(add)


async def create_token(
    db: Database,
    username: str,
    name: str,
    now: datetime,
    actor: str,
    expires_at: datetime | None = None,
) -> tuple[str, int]:
    """Create an API token for a user: the token (returned once, never stored) and its id
    (what ``token list`` shows and ``token revoke`` takes).  ``expires_at``: when it stops
    working by itself; None, until revoked."""
    if expires_at is not None and expires_at <= now:
        raise BadInput(
            "token_expiry_not_in_future",
            "令牌的过期时间必须晚于现在",
            "a token's expiry must be in the future",
        )
    token = new_token()

    def create(tx: sqlite3.Connection) -> int:
        row = tx.execute(
            "SELECT id, disabled FROM users WHERE username = ?", (username,)
        ).fetchone()
        if row is None:
            raise NotFound("user_not_found", f"找不到用户 {username}", f"no user {username}")
        if row["disabled"]:
            raise Conflict(
                "user_disabled",
                f"用户 {username} 已停用;如需为其创建令牌,请先启用(responder user enable)",
                f"user {username} is disabled; enable them first (responder user enable)",
            )
        cur = tx.execute(
            "INSERT INTO tokens (user_id, name, token_hash, created_at, expires_at)"
            " VALUES (?,?,?,?,?)",
            (row[0], name, token_hash(token), to_db(now), to_db(expires_at)),
        )
        audit.append(
            tx,
            now,
            actor,
            "token.created",
            username,
            {"token_id": cur.lastrowid, "name": name, "expires_at": to_db(expires_at)},
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    return token, await db.transact(create)


async def revoke_token(db: Database, token_id: int, now: datetime, actor: str) -> None:
    def revoke(tx: sqlite3.Connection) -> None:
        cur = tx.execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (to_db(now), token_id),
        )
        if cur.rowcount == 0:
            raise NotFound(
                "token_not_found", f"找不到有效的令牌 {token_id}", f"no active token {token_id}"
            )
        audit.append(tx, now, actor, "token.revoked", str(token_id), {})

    await db.transact(revoke)


async def user_for_token(db: Database, token: str, now: datetime) -> dict[str, Any] | None:
    """The user a valid token belongs to (None for a token unknown, revoked or of a disabled
    user; :class:`TokenExpired` for one past its end).  Notes when the token was last used, to
    the hour (an administrator looking for tokens nobody uses any more needs no finer)."""
    row = await db.fetchone(
        "SELECT u.id, u.username, u.role, t.id AS token_id, t.last_used_at, t.expires_at"
        " FROM tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_hash = ? AND t.revoked_at IS NULL AND u.disabled = 0",
        (token_hash(token),),
    )
    if row is None:
        return None
    expires_at = from_db(row["expires_at"])
    if expires_at is not None and expires_at <= now:
        raise TokenExpired(expires_at)
    stale = to_db(now - USE_NOTED_EVERY)
    if row["last_used_at"] is None or row["last_used_at"] < stale:

        def note(tx: sqlite3.Connection) -> None:
            # Conditional: of many requests at once, one writes.
            tx.execute(
                "UPDATE tokens SET last_used_at = ? WHERE id = ?"
                " AND (last_used_at IS NULL OR last_used_at < ?)",
                (to_db(now), row["token_id"], stale),
            )

        try:  # bookkeeping: never wait for a lock, nor refuse a read, for it
            await db.transact(note, wait=False)
        except Unavailable:
            pass  # the store has logged the fault, once
        except Exception as e:
            log.warning("could not note the use of token %s: %s", row["token_id"], e)
    return {k: row[k] for k in ("id", "username", "role", "token_id")}


async def tokens(db: Database, username: str | None = None) -> list[dict[str, Any]]:
    """Every token (never the token itself: it is not stored), newest first.  A user named
    who does not exist is an error, not an empty list (a typo would look like "no tokens")."""
    if username is not None and not await db.fetchone(
        "SELECT 1 FROM users WHERE username = ?", (username,)
    ):
        raise NotFound("user_not_found", f"找不到用户 {username}", f"no user {username}")
    rows = await db.scan(
        "SELECT t.id, u.username, u.role, t.name, t.created_at, t.last_used_at, t.revoked_at,"
        " t.expires_at, u.disabled FROM tokens t JOIN users u ON u.id = t.user_id"
        " WHERE ? IS NULL OR u.username = ? ORDER BY t.id DESC",
        (username, username),
    )
    return [dict(r) for r in rows]


async def users(db: Database) -> list[dict[str, Any]]:
    rows = await db.scan(
        "SELECT u.username, u.role, u.disabled, u.created_at, u.password_hash IS NOT NULL"
        " AS can_log_in, (SELECT COUNT(*) FROM tokens t WHERE t.user_id = u.id"
        " AND t.revoked_at IS NULL) AS tokens FROM users u ORDER BY u.username"
    )
    return [dict(r) for r in rows]


def _check_password(password: str) -> None:
    if len(password) < 10:
        raise BadInput(
            "weak_password", "密码至少 10 个字符", "a password needs at least 10 characters"
        )


async def set_password(
    db: Database, username: str, password: str, now: datetime, actor: str
) -> None:
    """Give a user a new page password (a forgotten one, or a first one for a user added with
    ``--no-password``).  Their page sessions end: whoever held the old password is signed out."""
    _check_password(password)
    password_hash = hash_password(password)  # slow: not in the job

    def change(tx: sqlite3.Connection) -> None:
        row = tx.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
        if row is None:
            raise NotFound("user_not_found", f"找不到用户 {username}", f"no user {username}")
        tx.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, row[0]))
        tx.execute("DELETE FROM sessions WHERE user_id = ?", (row[0],))
        audit.append(tx, now, actor, "user.password_set", username, {})  # never the hash

    await db.transact(change)


async def set_disabled(
    db: Database, username: str, disabled: bool, now: datetime, actor: str
) -> None:
    """Disable a user (their tokens and page sessions stop working at once) or enable them
    again (their tokens that were not revoked work again)."""

    def change(tx: sqlite3.Connection) -> None:
        cur = tx.execute(
            "UPDATE users SET disabled = ? WHERE username = ?", (int(disabled), username)
        )
        if cur.rowcount == 0:
            raise NotFound("user_not_found", f"找不到用户 {username}", f"no user {username}")
        if disabled:
            tx.execute(
                "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username = ?)",
                (username,),
            )
        action = "user.disabled" if disabled else "user.enabled"
        audit.append(tx, now, actor, action, username, {})

    await db.transact(change)


# -- page sessions (the cookie itself is signed and read in responder.web.security) ----------


async def login_user(db: Database, username: str) -> Any:
    """The enabled user of that name with their password hash, or None."""
    return await db.fetchone(
        "SELECT id, password_hash FROM users WHERE username = ? AND disabled = 0", (username,)
    )


async def start_session(
    db: Database, session_id: str, user_id: int, now: datetime, lasts: timedelta
) -> None:
    """Record a signed-in page session (and forget the ones that have ended)."""

    def start(tx: sqlite3.Connection) -> None:
        tx.execute("DELETE FROM sessions WHERE expires_at <= ?", (to_db(now),))
        tx.execute(
            "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (?,?,?,?)",
            (session_id, user_id, to_db(now), to_db(now + lasts)),
        )

    await db.transact(start)


async def end_session(db: Database, session_id: str) -> None:
    await db.transact(lambda tx: tx.execute("DELETE FROM sessions WHERE id = ?", (session_id,)))


async def user_for_session(
    db: Database, session_id: str, user_id: object, now: datetime
) -> dict[str, Any] | None:
    """The user of a live session (None: ended, signed out, or the user disabled)."""
    row = await db.fetchone(
        "SELECT u.id, u.username, u.role FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.id = ? AND s.user_id = ? AND s.expires_at > ? AND u.disabled = 0",
        (session_id, user_id, to_db(now)),
    )
    return dict(row) if row is not None else None
