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


def load_secret(path: str) -> bytes:
    env = os.environ.get("RESPONDER_SECRET")
    if env:
        return hashlib.sha256(env.encode()).digest()
    p = Path(path)
    if p.exists():
        return base64.b64decode(p.read_text().strip())
    p.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return key


def ack_token(secret: bytes, nonce: str) -> str:
    """The token in a message's link: 192 bits derived from the notification's random nonce
    (128 bits) and the server secret; never stored (only its hash is)."""
    mac = hmac.new(secret, f"ack:{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
