"""Wake-ups for desired-state long polls.

A service that changes a device's desired state calls `notify(device_id)` (from any
thread); requests waiting for that device wake within milliseconds. Waiters also re-read
the store every few seconds, so a change written by another replica is seen too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class DesiredStateWatch:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextmanager
    def subscribe(self, device_id: str) -> Iterator[asyncio.Event]:
        """An event set on the next notify for `device_id`; subscribe before reading state."""
        event = asyncio.Event()
        self._waiters.setdefault(device_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(device_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[device_id]

    def notify(self, device_id: str) -> None:
        """Wake every waiter for `device_id`; safe to call from worker threads."""
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._wake, device_id)

    def _wake(self, device_id: str) -> None:
        for event in self._waiters.get(device_id, ()):
            event.set()

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())
