"""What a load run is told (`LoadSettings`) and what it counts (`LoadStats`).

Stats are plain counters and DDSketches (`sim.traffic.TrafficStats`), so the worker
processes of one run merge exactly. `desired_updates` holds the wall-clock time each
device received each new desired state (not its first): a benchmark that changes the
desired state of every device at T reads how long until 99 % of them had it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgefleet.sim.traffic import TrafficStats

MAX_ERROR_KINDS = 50


class LoadTransport(StrEnum):
    HTTP = "http"
    MQTT = "mqtt"


@dataclass(frozen=True)
class LoadSettings:
    server_url: str
    enroll_token: str
    devices: int
    transport: LoadTransport = LoadTransport.HTTP
    mqtt_url: str | None = None
    duration_s: float = 60.0
    heartbeat_interval_s: float = 30.0
    presence: bool = True  # mqtt: a Will and `online`, then the interval the device is told
    long_poll_s: float = 30.0
    telemetry_upload_interval_s: float = 300.0  # 0: no telemetry
    ramp_s: float = 0.0  # spread the devices' starts over this long
    warmup_s: float = 0.0  # latencies are measured after this (counts cover the whole run)
    progress_path: str | None = None  # append counts as JSON lines, every second, here
    workers: int = 1
    source_addresses: tuple[str, ...] = ()  # loopback addresses to connect from
    enroll_concurrency: int = 16  # enrollments in flight per worker
    enroll_attempts: int = 5
    name_prefix: str = "load"
    seed: int = 1


@dataclass
class LoadStats:
    traffic: TrafficStats = field(default_factory=TrafficStats)
    enrolled: int = 0
    enroll_failed: int = 0
    online: int = 0  # devices that got their first desired state (connected and in sync)
    reports_sent: int = 0
    reports_failed: int = 0  # no answer, or an error status
    telemetry_sent: int = 0
    telemetry_failed: int = 0
    desired_updates: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0
    enroll_concurrency: int = 16

    def __post_init__(self) -> None:
        self.enrolling = asyncio.Semaphore(self.enroll_concurrency)

    def answered(self, kind: str, elapsed_s: float, status: int | None, error: str | None) -> None:
        """One exchange of `kind`: its status (None: no answer) and what went wrong."""
        self.traffic.record(kind, elapsed_s, elapsed_s if status is not None else None, status)
        if error is not None and (error in self.errors or len(self.errors) < MAX_ERROR_KINDS):
            self.errors[error[:200]] += 1

    def desired_update(self, at_unix_s: float) -> None:
        self.desired_updates.append(at_unix_s)

    def merge(self, other: LoadStats) -> None:
        self.traffic.merge(other.traffic)
        for name in ("enrolled", "enroll_failed", "online", "reports_sent", "reports_failed",
                     "telemetry_sent", "telemetry_failed", "cpu_s"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.desired_updates += other.desired_updates
        self.errors.update(other.errors)

    def to_wire(self) -> dict[str, Any]:
        return {
            "traffic": self.traffic.to_wire(), "enrolled": self.enrolled,
            "enroll_failed": self.enroll_failed, "online": self.online,
            "reports_sent": self.reports_sent,
            "reports_failed": self.reports_failed, "telemetry_sent": self.telemetry_sent,
            "telemetry_failed": self.telemetry_failed, "desired_updates": self.desired_updates,
            "errors": dict(self.errors), "cpu_s": self.cpu_s,
        }  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> LoadStats:
        return cls(
            TrafficStats.from_wire(raw["traffic"]), raw["enrolled"], raw["enroll_failed"],
            raw["online"], raw["reports_sent"], raw["reports_failed"], raw["telemetry_sent"],
            raw["telemetry_failed"], list(raw["desired_updates"]), Counter(raw["errors"]),
            raw["cpu_s"],
        )  # fmt: skip
