"""Wake-ups for desired-state long polls.

A service that changes a device's desired state calls `notify(device_id)` (from any
thread); requests waiting for that device wake within milliseconds. On PostgreSQL a change
written by any replica also reaches every replica as a notification of the device's new
generation (`store/notifications.py`, `server/notify.py`), which calls `heard`. As a
backstop (SQLite shared by several processes, a listener reconnecting), the server re-reads
the desired generations of every waiting device in one query every `RECHECK_INTERVAL_S`
(`wake_changed`) and wakes the waiters whose generation moved, rather than each waiter
re-reading its device on its own.

On shutdown `close()` answers every waiter at once, so no long poll holds the server's
graceful shutdown open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from edgefleet.server.metrics import Gauge

# How often the generations of waiting devices are re-read from the store.
RECHECK_INTERVAL_S = 5.0


class DesiredStateWatch:
    def __init__(self, waiting_gauge: Gauge | None = None) -> None:
        self._gauge = waiting_gauge  # set to the number of waiters as it changes
        self._waiting = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._seen: dict[str, int] = {}  # device -> the generation its waiters last read
        self._closed = False
        self._listeners: list[Callable[[str], None]] = []

    def on_notify(self, listener: Callable[[str], None]) -> None:
        """Call `listener(device_id)` at every `notify` too, on the notifying thread (the MQTT
        channel publishes the device's new document)."""
        self._listeners.append(listener)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._closed = False

    @contextmanager
    def subscribe(self, device_id: str) -> Iterator[asyncio.Event]:
        """An event set on the next notify for `device_id`; subscribe before reading state.
        Already set once the watch is closed."""
        event = asyncio.Event()
        if self._closed:
            event.set()
        self._waiters.setdefault(device_id, set()).add(event)
        self._count(+1)
        try:
            yield event
        finally:
            self._count(-1)
            waiters = self._waiters.get(device_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[device_id]
                    self._seen.pop(device_id, None)

    def note(self, device_id: str, generation: int) -> None:
        """Record the generation a waiter for `device_id` read before it started waiting."""
        if device_id in self._waiters:
            self._seen[device_id] = generation

    def notify(self, device_id: str) -> None:
        """Wake every waiter for `device_id`; safe to call from worker threads."""
        for listener in self._listeners:
            listener(device_id)
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._wake, device_id)

    def heard(self, device_id: str, generation: int | None) -> bool:
        """Wake the waiters of `device_id` unless the generation they read is `generation`
        (a change another replica made, or this one already woke them for). Call on the
        event loop; True when waiters were woken."""
        if device_id not in self._waiters:
            return False
        if device_id in self._seen and self._seen[device_id] == generation:
            return False
        self._wake(device_id)
        return True

    def waiting_devices(self) -> list[str]:
        """The devices with a waiting long poll (call on the event loop)."""
        return sorted(self._waiters)

    def wake_changed(self, generations: Mapping[str, int | None]) -> int:
        """Wake the waiters of devices whose stored generation differs from the one they
        read; None (or absent) means the device is gone or no longer approved, which its
        waiters must learn too. Call on the event loop; returns the devices woken."""
        changed = [d for d, seen in self._seen.items() if generations.get(d) != seen]
        for device_id in changed:
            self._wake(device_id)
        return len(changed)

    def close(self) -> None:
        """Answer every waiter now, and every later subscriber at once (shutdown)."""
        self._closed = True
        for device_id in list(self._waiters):
            self._wake(device_id)

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self, device_id: str) -> None:
        self._seen.pop(device_id, None)
        for event in self._waiters.get(device_id, ()):
            event.set()

    @property
    def waiting(self) -> int:
        return self._waiting

    def _count(self, change: int) -> None:
        self._waiting += change
        if self._gauge is not None:
            self._gauge.set(self._waiting)
