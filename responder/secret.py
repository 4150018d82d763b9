"""The server secret: signs acknowledgement links and login sessions.

``$RESPONDER_SECRET`` wins; otherwise a random key is kept in ``service.secret_file``
(created on first use, mode 0600).  It is never stored in the database, so a copy of the
database alone cannot forge an acknowledgement link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from responder.errors import ResponderError

KEY_BYTES = 32
MIN_ENV_CHARS = 16  # a passphrase in $RESPONDER_SECRET; hashed to the key


def load_secret(path: str) -> bytes:
    """The key: from ``$RESPONDER_SECRET``, else the file (made on first start).

    A key that cannot be trusted is refused, never used: an empty or cut-short file (a disk
    that filled up while it was written) would otherwise sign sessions with an empty key,
    which anyone can forge."""
    env = os.environ.get("RESPONDER_SECRET")
    if env:
        if len(env) < MIN_ENV_CHARS:
            raise ResponderError(
                "secret_unavailable",
                f"环境变量 RESPONDER_SECRET 太短(至少 {MIN_ENV_CHARS} 个字符)",
                f"RESPONDER_SECRET is too short (at least {MIN_ENV_CHARS} characters)",
            )
        return hashlib.sha256(env.encode()).digest()
    p = Path(path)
    if p.exists():
        try:
            key = base64.b64decode(p.read_text(encoding="ascii").strip(), validate=True)
        except (OSError, ValueError) as e:  # binascii.Error and UnicodeDecodeError included
            raise _unusable(path, str(e) or type(e).__name__) from None
        if len(key) < KEY_BYTES:
            raise _unusable(path, f"{len(key)} bytes, not {KEY_BYTES}")
        return key
    return _create(p)


def _create(p: Path) -> bytes:
    """Make the key file so that it appears whole or not at all.

    1. Write the key to a temporary file beside it and fsync it.
    2. Hard-link it to the key file's name: atomic, and refused if the name exists — another
       process starting at the same moment made its key first; theirs is then read and used.
    3. Remove the temporary name.

    Written in place, a kill -9 between creating the file and writing it (the very first start)
    left an empty key file that every later start refused.  A filesystem without hard links
    gets the key written in place, as before.
    """
    key = secrets.token_bytes(KEY_BYTES)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(6)}.tmp")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        _write_new(tmp, key)
        try:
            os.link(tmp, p)
        except FileExistsError:
            return load_secret(str(p))
        except OSError:  # no hard links here (some network or FAT filesystems)
            _write_new(p, key)
    except OSError as e:
        raise _unusable(str(p), str(e)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _write_new(path: Path, key: bytes) -> None:
    """Create ``path`` (mode 0600; it must not exist) holding the key, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(key).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError:  # leave no half-written key behind to be read at the next start
        path.unlink(missing_ok=True)
        raise


def _unusable(path: str, reason: str) -> ResponderError:
    return ResponderError(
        "secret_unavailable",
        f"服务器密钥文件 {path} 无法使用:{reason}。它在首次启动时生成,请从备份恢复;"
        "若删除它,启动时会生成新密钥,已发出的确认链接和登录会话随之失效",
        f"the server secret file {path} cannot be used: {reason}. It is made at the first"
        " start; restore it from a backup. If it is deleted a new one is made, and the"
        " acknowledgement links already sent and the page sessions stop working",
    )


def ack_token(secret: bytes, nonce: str) -> str:
    """The token in a message's link: 192 bits derived from the notification's random nonce
    (128 bits) and the server secret; never stored (only its hash is)."""
    mac = hmac.new(secret, f"ack:{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
