"""Requests first: while the service is answering someone, the dispatcher holds back.

A duty officer declaring an incident waits for the answer; a message that goes out 50 ms
later loses nothing.  Under a burst of requests the dispatcher's own work (claiming, rendering
and recording messages: a fraction of a millisecond each, in the service's process) would
otherwise be interleaved with every request.  So before it claims more messages the
dispatcher waits until no request is being answered — at most ``MAX_WAIT`` — and then goes on
regardless, so that alerts never stall however busy the API is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

MAX_WAIT = 0.05  # real seconds


class Foreground:
    def __init__(self) -> None:
        self.serving = 0  # requests being answered now
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Count one request while it is being answered."""
        self.serving += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.serving -= 1
            if self.serving == 0:
                self._idle.set()

    async def idle(self, max_wait: float = MAX_WAIT) -> None:
        """Return when no request is being answered, or after ``max_wait`` seconds."""
        if self.serving:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max_wait)
