"""The lab's discrete-event scheduler: simulated time jumps from one event to the next.

Times are seconds since the start of the rehearsal; events at the same time run in the
order they were scheduled, so a run is deterministic.

>>> s = EventScheduler()
>>> seen = []
>>> s.at(5.0, seen.append, "b"); s.at(1.0, seen.append, "a")
>>> s.run(until_s=10.0); seen, s.now_s
(['a', 'b'], 10.0)
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class EventScheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.now_s = 0.0
        self.processed = 0

    def at(self, time_s: float, action: Callable[..., None], *args: Any) -> None:
        """Run `action(*args)` at `time_s` (now, if that has passed)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(time_s, self.now_s), self._seq, action, args))

    def after(self, delay_s: float, action: Callable[..., None], *args: Any) -> None:
        self.at(self.now_s + max(0.0, delay_s), action, *args)

    def run(self, until_s: float) -> None:
        """Process every event up to `until_s`; the clock then reads `until_s`."""
        heap = self._heap
        while heap and heap[0][0] <= until_s:
            time_s, _, action, args = heapq.heappop(heap)
            self.now_s = time_s
            action(*args)
            self.processed += 1
        self.now_s = max(self.now_s, until_s)
