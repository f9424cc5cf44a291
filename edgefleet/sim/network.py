"""The simulated network between a virtual device and the control plane: its conditions as a
profile declares them, and the seeded model that turns them into delays, losses and outages.

    network:
      latency_ms: 40         # one way, mean
      jitter_ms: 10          # standard deviation of the one-way latency (clipped at 0)
      bandwidth_kbps: 2000   # per device, both directions (omit: unlimited)
      loss_percent: 1        # share of request/response exchanges that never complete
      outages: {every: 6h, duration: 5m}   # periodic, each device at its own phase

A *lost* exchange is one the agent sees fail (the server unreachable) after the one-way
latency: at the level of HTTP over TCP a lost segment is retransmitted, and what reaches the
agent is a request that did not complete. So `loss_percent: 10` drops about one heartbeat
in ten, which is what the liveness detector has to live with. Partitions are scheduled as
faults (`faults.py`) and applied with `NetworkModel.partition_until`.

The model draws from its own `random.Random`, so a device's network is the same on every
run with the same seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from edgefleet.core.manifest import check_keys, read_duration_s, read_mapping, read_number
from edgefleet.errors import InvalidInput

MAX_LATENCY_MS = 60_000.0
MAX_OUTAGE_PERIOD_S = 30 * 86400.0


@dataclass(frozen=True)
class Outage:
    """A periodic outage: offline for `duration_s` once every `every_s`."""

    every_s: float
    duration_s: float


@dataclass(frozen=True)
class NetworkConditions:
    latency_ms: float = 20.0
    jitter_ms: float = 5.0
    bandwidth_kbps: float | None = None
    loss_percent: float = 0.0
    outage: Outage | None = None


def parse_network(value: object, path: str) -> NetworkConditions:
    """The `network` section of a device class; InvalidInput names the field."""
    data = read_mapping(value, path)
    allowed = {"latency_ms", "jitter_ms", "bandwidth_kbps", "loss_percent", "outages"}
    check_keys(data, frozenset(allowed), path)
    bandwidth = data.get("bandwidth_kbps")
    outage = None
    if data.get("outages") is not None:
        p = f"{path}.outages"
        section = read_mapping(data["outages"], p)
        check_keys(section, frozenset({"every", "duration"}), p)
        for key in ("every", "duration"):
            if key not in section:
                raise InvalidInput(f"{p}.{key}: required")
        every_s = read_duration_s(
            section["every"], f"{p}.every", MAX_OUTAGE_PERIOD_S, positive=True
        )
        duration_s = read_duration_s(section["duration"], f"{p}.duration", every_s)
        outage = Outage(every_s, duration_s)
    return NetworkConditions(
        latency_ms=read_number(
            data.get("latency_ms", 20.0), f"{path}.latency_ms", 0, MAX_LATENCY_MS
        ),
        jitter_ms=read_number(data.get("jitter_ms", 5.0), f"{path}.jitter_ms", 0, MAX_LATENCY_MS),
        bandwidth_kbps=None
        if bandwidth is None
        else read_number(bandwidth, f"{path}.bandwidth_kbps", 1, 1e9),
        loss_percent=read_number(data.get("loss_percent", 0.0), f"{path}.loss_percent", 0, 100),
        outage=outage,
    )


class NetworkModel:
    """One device's network: seeded draws of latency and loss, and when it is offline.

    Times are seconds on the simulation's monotonic clock; `phase_s` shifts this device's
    periodic outages so that a fleet's devices do not all drop at once.
    """

    def __init__(
        self, conditions: NetworkConditions, rng: random.Random, phase_s: float = 0.0
    ) -> None:
        self.conditions = conditions
        self._rng = rng
        self._phase_s = phase_s
        self._partitioned_until_s = -math.inf

    def partition_until(self, until_s: float) -> None:
        """Cut this device off the control plane until `until_s` (a scheduled fault)."""
        self._partitioned_until_s = max(self._partitioned_until_s, until_s)

    def offline(self, now_s: float) -> bool:
        """True during a partition or one of the periodic outages."""
        if now_s < self._partitioned_until_s:
            return True
        outage = self.conditions.outage
        if outage is None or outage.duration_s <= 0:
            return False
        return (now_s + self._phase_s) % outage.every_s < outage.duration_s

    def one_way_s(self, payload_bytes: int = 0) -> float:
        """One direction: a latency draw plus the payload's time on the link."""
        c = self.conditions
        latency_ms = (
            max(0.0, self._rng.gauss(c.latency_ms, c.jitter_ms)) if c.jitter_ms else (c.latency_ms)
        )
        transfer_s = 0.0
        if c.bandwidth_kbps is not None and payload_bytes:
            transfer_s = payload_bytes * 8 / (c.bandwidth_kbps * 1000)
        return latency_ms / 1000 + transfer_s

    def lost(self) -> bool:
        """Draw whether the next exchange is lost."""
        return self.conditions.loss_percent > 0 and (
            self._rng.random() * 100 < self.conditions.loss_percent
        )
