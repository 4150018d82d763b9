"""Typed rows for what travels between modules: a step and a notification.

Their JSON columns are decoded once, here, when the row is read; everyone after works with
lists and plain values instead of decoding the same column again at each stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from responder.timeutil import from_db


def _time(value: str | None) -> datetime:
    t = from_db(value)
    assert t is not None
    return t


@dataclass(frozen=True)
class Step:
    """A point on an obligation's clock (table ``steps``)."""

    id: int
    incident_id: str
    obligation_id: int
    name: str
    kind: str
    nominal_at: datetime
    due_at: datetime
    audience: list[str]
    channels: list[str]
    is_deadline: bool
    repeat_s: int | None
    collapsed: list[str]
    all_channels: bool

    @classmethod
    def of(cls, row: Any) -> Step:
        return cls(
            id=row["id"],
            incident_id=row["incident_id"],
            obligation_id=row["obligation_id"],
            name=row["name"],
            kind=row["kind"],
            nominal_at=_time(row["nominal_at"]),
            due_at=_time(row["due_at"]),
            audience=json.loads(row["audience"]),
            channels=json.loads(row["channels"]),
            is_deadline=bool(row["is_deadline"]),
            repeat_s=row["repeat_s"],
            collapsed=json.loads(row["collapsed"]),
            all_channels=bool(row["all_channels"]),
        )


@dataclass(frozen=True)
class Notification:
    """One message to one person (table ``notifications``), as the dispatcher claimed it."""

    id: int
    incident_id: str | None  # None: a watchdog message about the service itself
    obligation_id: int | None
    person_id: str
    channels: list[str]  # this message's failover order
    channel_index: int
    attempt: int  # attempts on the current channel
    kind: str  # the step kind, or 'watchdog'
    context: dict[str, Any]  # facts frozen when it was queued
    ack_nonce: str

    @property
    def channel(self) -> str:
        """The channel this message is on now."""
        return self.channels[self.channel_index]

    @classmethod
    def of(cls, row: Any) -> Notification:
        return cls(
            id=row["id"],
            incident_id=row["incident_id"],
            obligation_id=row["obligation_id"],
            person_id=row["person_id"],
            channels=json.loads(row["channels"]),
            channel_index=row["channel_index"],
            attempt=row["attempt"],
            kind=row["kind"],
            context=json.loads(row["context"]),
            ack_nonce=row["ack_nonce"],
        )
