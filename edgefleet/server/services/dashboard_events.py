"""The dashboard's live updates: what changed in the fleet since the last look.

One `Pulse` (`services/dashboard.py`: status and enrollment counts, open alerts, rollout
states) is read at most once per `TICK_S` however many browsers listen, and each stream
compares it with the one it sent before (`changes`) to announce what moved.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from edgefleet.server.services.dashboard import DashboardService, Pulse

TICK_S = 1.0


def changes(previous: Pulse | None, current: Pulse) -> list[tuple[str, dict[str, Any]]]:
    """The events that take a page from `previous` to `current`: `fleet` with the counts
    when any changed, `rollout` with each rollout whose state or version moved.

    >>> a = Pulse({"online": 1}, {"approved": 1}, 0, {"r1": ("soaking", 3)})
    >>> [e for e, _ in changes(a, Pulse({"online": 2}, {"approved": 2}, 0, a.rollouts))]
    ['fleet']
    """
    out: list[tuple[str, dict[str, Any]]] = []
    counts = (current.status, current.enrollment, current.open_alerts)
    if previous is None or counts != (previous.status, previous.enrollment,
                                      previous.open_alerts):  # fmt: skip
        out.append(("fleet", {"status": current.status, "enrollment": current.enrollment,
                              "open_alerts": current.open_alerts}))  # fmt: skip
    before = {} if previous is None else previous.rollouts
    for rollout_id, (state, version) in sorted(current.rollouts.items()):
        if previous is not None and before.get(rollout_id) != (state, version):
            out.append(("rollout", {"id": rollout_id, "state": state, "version": version}))
    return out


class DashboardEvents:
    def __init__(self, dashboard: DashboardService) -> None:
        self._dashboard = dashboard
        self._lock = asyncio.Lock()
        self._latest: Pulse | None = None
        self._read_at = 0.0

    async def pulse(self) -> Pulse:
        """The fleet's pulse, read again when the last read is older than a tick."""
        async with self._lock:
            if self._latest is None or time.monotonic() - self._read_at >= TICK_S:
                self._latest = await run_in_threadpool(self._dashboard.pulse)
                self._read_at = time.monotonic()
            return self._latest
