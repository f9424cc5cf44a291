"""A modelled device's link to the control plane over time: when it is offline (periodic
outages at the device's phase, scheduled partitions, the node being down), and how long a
transfer that needs so many seconds of connectivity really takes.

Latency draws come from the same `NetworkModel` the virtual devices of `sim run` use.
"""

from __future__ import annotations

import math

from edgefleet.sim.network import NetworkConditions, NetworkModel

_MAX_STEPS = 100_000


class LinkSchedule:
    def __init__(self, model: NetworkModel, phase_s: float) -> None:
        self.model = model
        self._phase_s = phase_s
        self._down: list[tuple[float, float]] = []  # partitions and node downtime

    @property
    def conditions(self) -> NetworkConditions:
        return self.model.conditions

    def add_downtime(self, start_s: float, end_s: float) -> None:
        """The device is unreachable over [start_s, end_s) (a partition, a dead node)."""
        self._down.append((start_s, end_s))
        self._down.sort()

    def _outage_at(self, t: float) -> tuple[float, float] | None:
        outage = self.conditions.outage
        if outage is None or outage.duration_s <= 0 or math.isinf(t):
            return None
        cycle = math.floor((t + self._phase_s) / outage.every_s)
        start = cycle * outage.every_s - self._phase_s
        if start <= t < start + outage.duration_s:
            return start, start + outage.duration_s
        return None

    def next_outage_start(self, t: float) -> float:
        outage = self.conditions.outage
        if outage is None or outage.duration_s <= 0 or math.isinf(t):
            return math.inf
        cycle = math.floor((t + self._phase_s) / outage.every_s) + 1
        return cycle * outage.every_s - self._phase_s

    def offline(self, t: float) -> bool:
        return self._outage_at(t) is not None or any(a <= t < b for a, b in self._down)

    def next_online(self, t: float) -> float:
        """`t` if the link is up then, else when it next comes up."""
        for _ in range(_MAX_STEPS):
            if math.isinf(t):
                return t
            ends = [b for a, b in self._down if a <= t < b]
            outage = self._outage_at(t)
            if outage is not None:
                ends.append(outage[1])
            if not ends:
                return t
            t = max(ends)
        return math.inf

    def next_offline(self, t: float) -> float:
        """When the link next goes down after `t` (inf: never)."""
        starts = [a for a, _ in self._down if a > t]
        return min([self.next_outage_start(t), *starts])

    def advance_online(self, t: float, need_s: float) -> float:
        """When a transfer started at `t` that needs `need_s` of connectivity finishes
        (it pauses while the link is down and resumes, as downloads do)."""
        for _ in range(_MAX_STEPS):
            t = self.next_online(t)
            if math.isinf(t):
                return t
            down_at = self.next_offline(t)
            if t + need_s <= down_at:
                return t + need_s
            need_s -= down_at - t
            t = down_at
        return math.inf

    def one_way_s(self, payload_bytes: int = 0) -> float:
        return self.model.one_way_s(payload_bytes)
