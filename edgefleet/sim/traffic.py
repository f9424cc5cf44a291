"""Traffic statistics of a virtual fleet: requests per kind, failures, and latency sketches.

Two latencies are kept per request: `total` (what the agent waited, the simulated network
included) and `server` (the real HTTP exchange with the control plane alone, loopback here,
so it is the server's response time plus the simulator's own event-loop delay). Sketches are
DDSketches (1% relative accuracy), so shards of a multi-process run merge exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgefleet.core.telemetry.sketch import DDSketch

KINDS = ("enroll", "report", "desired", "telemetry", "tuf", "blob", "other")


def request_kind(target: str) -> str:
    """Which device API call a request target is."""
    path = target.split("?", 1)[0]
    if path == "/v1/enroll":
        return "enroll"
    if path.startswith("/v1/tuf/"):
        return "tuf"
    if path.startswith("/v1/blobs/"):
        return "blob"
    for kind in ("report", "desired", "telemetry"):
        if path.endswith(f"/{kind}"):
            return kind
    return "other"


@dataclass
class KindStats:
    requests: int = 0
    failures: int = 0  # unreachable, lost, offline (not HTTP errors: those are answers)
    errors: int = 0  # HTTP status >= 400
    total_ms: DDSketch = field(default_factory=DDSketch)
    server_ms: DDSketch = field(default_factory=DDSketch)

    def merge(self, other: KindStats) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.errors += other.errors
        self.total_ms.merge(other.total_ms)
        self.server_ms.merge(other.server_ms)

    def to_wire(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "errors": self.errors,
            "total_ms": self.total_ms.to_wire(),
            "server_ms": self.server_ms.to_wire(),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> KindStats:
        return cls(
            data["requests"],
            data["failures"],
            data["errors"],
            DDSketch.from_wire(data["total_ms"]),
            DDSketch.from_wire(data["server_ms"]),
        )


def _quantile(sketch: DDSketch, q: float) -> float | None:
    return round(sketch.quantile(q), 2) if sketch.count else None


class TrafficStats:
    """Counters for one process's virtual devices (shared by all their transports)."""

    def __init__(self) -> None:
        self.kinds: dict[str, KindStats] = {kind: KindStats() for kind in KINDS}

    def reset(self) -> None:
        """Forget everything counted so far (the end of a warm-up)."""
        for kind in KINDS:
            self.kinds[kind] = KindStats()

    def record(self, kind: str, total_s: float, server_s: float | None, status: int | None) -> None:
        stats = self.kinds[kind]
        stats.requests += 1
        if status is None:
            stats.failures += 1
        elif status >= 400:
            stats.errors += 1
        stats.total_ms.add(max(total_s, 0.0) * 1000)
        if server_s is not None:
            stats.server_ms.add(max(server_s, 0.0) * 1000)

    def merge(self, other: TrafficStats) -> None:
        for kind, stats in other.kinds.items():
            self.kinds[kind].merge(stats)

    def to_wire(self) -> dict[str, Any]:
        return {kind: stats.to_wire() for kind, stats in self.kinds.items()}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> TrafficStats:
        stats = cls()
        stats.kinds = {kind: KindStats.from_wire(value) for kind, value in data.items()}
        return stats

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per kind: counts and latency percentiles in milliseconds (None without data)."""
        result: dict[str, dict[str, Any]] = {}
        for kind, s in self.kinds.items():
            if not s.requests:
                continue
            result[kind] = {
                "requests": s.requests,
                "failures": s.failures,
                "http_errors": s.errors,
                "total_p50_ms": _quantile(s.total_ms, 0.5),
                "total_p99_ms": _quantile(s.total_ms, 0.99),
                "server_p50_ms": _quantile(s.server_ms, 0.5),
                "server_p99_ms": _quantile(s.server_ms, 0.99),
            }
        return result
