"""The injectable clock.  Production uses :class:`SystemClock`; tests and drills use
:class:`FakeClock`, which runs hours of escalation in milliseconds.

Everything that waits for a time asks the clock: ``await clock.sleep_until(t, wake)`` returns
when the clock reaches ``t`` or ``wake`` is set, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep_until(self, t: datetime | None, wake: asyncio.Event) -> None: ...


class SystemClock:
    """Wall time in UTC.  ``speed`` > 1 runs a drill faster (60 = an hour a minute)."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self._origin_real = datetime.now(UTC)
        self._origin_loop: float | None = None

    def now(self) -> datetime:
        real = datetime.now(UTC)
        if self.speed == 1.0:
            return real
        return self._origin_real + (real - self._origin_real) * self.speed

    async def sleep_until(self, t: datetime | None, wake: asyncio.Event) -> None:
        timeout = None
        if t is not None:
            timeout = max(0.0, (t - self.now()).total_seconds() / self.speed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)


class FakeClock:
    """A clock that moves only when told.  ``advance`` wakes every sleeper whose time came."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("naive start")
        self._now = start.astimezone(UTC)
        self._changed = asyncio.Event()
        # Each task that sleeps on this clock -> the clock time at which it went to sleep, or
        # None while it is awake.
        self._asleep_at: weakref.WeakKeyDictionary[asyncio.Task[object], datetime | None] = (
            weakref.WeakKeyDictionary()
        )

    def now(self) -> datetime:
        return self._now

    def set(self, t: datetime) -> None:
        self._now = t.astimezone(UTC)
        self._changed.set()
        self._changed = asyncio.Event()

    def advance(self, delta: timedelta | float) -> None:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        self.set(self._now + delta)

    def all_asleep(self) -> bool:
        """True when every task that sleeps on this clock has gone back to sleep since the clock
        last moved: what was due at ``now`` has been handled.  Tests wait for this instead of
        guessing a real-time pause."""
        return all(at == self._now for task, at in self._asleep_at.items() if not task.done())

    async def sleep_until(self, t: datetime | None, wake: asyncio.Event) -> None:
        task = asyncio.current_task()
        while not wake.is_set() and (t is None or self._now < t):
            if task is not None:
                self._asleep_at[task] = self._now
            changed = self._changed
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(changed.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
        if task is not None:
            self._asleep_at[task] = None
