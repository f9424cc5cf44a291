"""The tests' one fake clock: time moves only when a test advances it or code sleeps on it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from edgefleet.clock import Clock

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class FakeClock(Clock):
    """Starts at `now`; a sleep is recorded in `slept`, moves the time on and yields to the
    event loop once; `monotonic` counts seconds from the start."""

    def __init__(self, now: datetime = T0) -> None:
        self.at = now
        self._start = now
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return (self.at - self._start).total_seconds()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)
