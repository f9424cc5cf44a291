"""Clocks: the one place that reads the time, so a simulator can substitute its own."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for intervals)."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def pause(self, seconds: float, wake: asyncio.Event) -> None:
        """Sleep `seconds` on this clock, or until `wake` is set (at once if it is): how a
        loop waits for its next turn yet answers a nudge. Clocks that subclass `Clock` get
        it from their `sleep`."""
        if wake.is_set():
            return
        sleeper = asyncio.create_task(self.sleep(seconds))
        waker = asyncio.create_task(wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)


class SystemClock(Clock):
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def isoformat_utc(moment: datetime) -> str:
    """`2026-11-27T10:50:29.123456Z`: fixed width, sorts as text, exact round trip."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
