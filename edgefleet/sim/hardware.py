"""Simulated hardware: a device class's machine as a profile declares it, and `SimHardware`,
the agent's `Hardware` port (and its telemetry host reader) for one virtual device.

    hardware:
      arch: aarch64
      cpu_count: 4
      memory_mb: 2048
      disk_mb: 16000
      accelerators: [npu]
      onnxruntime: "1.17.1"        # what the device reports (compatibility rules read it)
      base_cpu_percent: 15         # idle load; the workload adds to it
      power: battery               # mains | battery | solar
      battery: {start_percent: [60, 100], drain_percent_per_hour: 4}

A battery drains linearly on the simulation clock (a fault can make it drain faster); at
0% the node dies (`depleted`). Readings carry a little seeded noise so that anomaly
detection sees a realistic baseline.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgefleet import __version__
from edgefleet.agent.hardware import Hardware
from edgefleet.agent.telemetry.host_metrics import (
    AGENT_CPU_PERCENT,
    AGENT_RSS_BYTES,
    BATTERY_PERCENT,
    CPU_PERCENT,
    MEMORY_PERCENT,
    MEMORY_USED_BYTES,
    POWER_PLUGGED,
)
from edgefleet.core.manifest import (
    check_keys,
    read_choice,
    read_int,
    read_list,
    read_mapping,
    read_number,
    read_string,
)
from edgefleet.core.telemetry.windows import MetricKind, MetricPoint
from edgefleet.core.workloads.terms import PowerSource
from edgefleet.errors import InvalidInput

MB = 1024 * 1024


@dataclass(frozen=True)
class BatterySpec:
    start_percent: tuple[float, float] = (80.0, 100.0)  # drawn uniformly per device
    drain_percent_per_hour: float = 5.0


@dataclass(frozen=True)
class HardwareSpec:
    arch: str = "x86_64"
    cpu_count: int = 2
    memory_mb: int = 2048
    disk_mb: int = 16_000
    accelerators: tuple[str, ...] = ()
    os: str = "linux"
    onnxruntime: str | None = "1.17.1"
    base_cpu_percent: float = 10.0
    power: PowerSource = PowerSource.MAINS
    battery: BatterySpec | None = None


def _battery(value: object, path: str) -> BatterySpec:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"start_percent", "drain_percent_per_hour"}), path)
    start = data.get("start_percent", [80, 100])
    if isinstance(start, list | tuple):
        if len(start) != 2:
            raise InvalidInput(f"{path}.start_percent: expected a number or [low, high]")
        low = read_number(start[0], f"{path}.start_percent[0]", 0, 100)
        high = read_number(start[1], f"{path}.start_percent[1]", low, 100)
    else:
        low = high = read_number(start, f"{path}.start_percent", 0, 100)
    return BatterySpec(
        (low, high),
        read_number(
            data.get("drain_percent_per_hour", 5.0), f"{path}.drain_percent_per_hour", 0, 10_000
        ),
    )


def parse_hardware(value: object, path: str) -> HardwareSpec:
    """The `hardware` section of a device class; InvalidInput names the field."""
    data = read_mapping(value, path)
    allowed = {
        "arch",
        "cpu_count",
        "memory_mb",
        "disk_mb",
        "accelerators",
        "os",
        "onnxruntime",
        "base_cpu_percent",
        "power",
        "battery",
    }
    check_keys(data, frozenset(allowed), path)
    default = HardwareSpec()
    power = read_choice(data.get("power", "mains"), f"{path}.power", PowerSource)
    battery = None
    if power is not PowerSource.MAINS or "battery" in data:
        battery = _battery(data.get("battery", {}), f"{path}.battery")
    runtime = data.get("onnxruntime", default.onnxruntime)
    return HardwareSpec(
        arch=read_string(data.get("arch", default.arch), f"{path}.arch"),
        cpu_count=read_int(data.get("cpu_count", default.cpu_count), f"{path}.cpu_count", 1, 1024),
        memory_mb=read_int(data.get("memory_mb", default.memory_mb), f"{path}.memory_mb",
                           16, 10_000_000),
        disk_mb=read_int(data.get("disk_mb", default.disk_mb), f"{path}.disk_mb", 1, 10**9),
        accelerators=tuple(
            read_string(a, f"{path}.accelerators[{i}]")
            for i, a in enumerate(read_list(data.get("accelerators", []), f"{path}.accelerators"))
        ),
        os=read_string(data.get("os", default.os), f"{path}.os"),
        onnxruntime=None if runtime is None else read_string(str(runtime), f"{path}.onnxruntime"),
        base_cpu_percent=read_number(data.get("base_cpu_percent", default.base_cpu_percent),
                                     f"{path}.base_cpu_percent", 0, 100),
        power=power,
        battery=battery,
    )  # fmt: skip


class SimHardware:
    """One virtual device's machine. `now_s` reads the simulation's monotonic clock."""

    def __init__(
        self,
        spec: HardwareSpec,
        now_s: Callable[[], float],
        rng: random.Random,
        *,
        workload_cpu_percent: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.spec = spec
        self._now_s = now_s
        self._rng = rng
        self._workload_cpu_percent = workload_cpu_percent
        battery = spec.battery
        self._battery_at_start = None if battery is None else rng.uniform(*battery.start_percent)
        self._drain_per_h = 0.0 if battery is None else battery.drain_percent_per_hour
        self._level_at_s = now_s()
        self._level = self._battery_at_start

    def durable(self, moment: str) -> None:
        pass  # virtual devices crash through the fault schedule (sim/faults.py)

    def inventory(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "hardware": {
                "arch": spec.arch,
                "cpu_count": spec.cpu_count,
                "memory_mb": spec.memory_mb,
                "accelerators": list(spec.accelerators),
                "disk_mb": spec.disk_mb,
            },
            "software": {
                "os": spec.os,
                "os_version": "simulated",
                "python": "3",
                "agent_version": __version__,
                "onnxruntime": spec.onnxruntime,
            },
        }

    # The battery.

    def battery_percent(self) -> float | None:
        """The charge now (None on a device without a battery)."""
        if self._level is None:
            return None
        now = self._now_s()
        level = self._level - self._drain_per_h * (now - self._level_at_s) / 3600
        return max(0.0, level)

    def set_drain(self, percent_per_hour: float) -> None:
        """Change the drain rate from now on (a battery-drain fault)."""
        level = self.battery_percent()
        self._level, self._level_at_s = level, self._now_s()
        self._drain_per_h = percent_per_hour

    def depleted(self) -> bool:
        level = self.battery_percent()
        return level is not None and level <= 0.0 and self.spec.power is not PowerSource.MAINS

    def seconds_until_depleted(self) -> float | None:
        level = self.battery_percent()
        if level is None or self._drain_per_h <= 0 or self.spec.power is PowerSource.MAINS:
            return None
        return level / self._drain_per_h * 3600

    # The telemetry host reader.

    def collect(self) -> list[MetricPoint]:
        """What HostMetricsCollector would read on this machine."""
        spec, rng = self.spec, self._rng
        cpu = spec.base_cpu_percent + self._workload_cpu_percent() + rng.gauss(0, 2)
        memory_used = spec.memory_mb * MB * min(0.95, 0.3 + rng.uniform(0, 0.05))
        points = [
            MetricPoint(CPU_PERCENT, MetricKind.GAUGE, round(min(100.0, max(0.0, cpu)), 1)),
            MetricPoint(MEMORY_USED_BYTES, MetricKind.GAUGE, float(int(memory_used))),
            MetricPoint(MEMORY_PERCENT, MetricKind.GAUGE,
                        round(100 * memory_used / (spec.memory_mb * MB), 1)),
            MetricPoint(AGENT_RSS_BYTES, MetricKind.GAUGE, float(28 * MB)),
            MetricPoint(AGENT_CPU_PERCENT, MetricKind.GAUGE, round(abs(rng.gauss(0.2, 0.05)), 1)),
        ]  # fmt: skip
        level = self.battery_percent()
        if level is not None:
            points.append(MetricPoint(BATTERY_PERCENT, MetricKind.GAUGE, round(level, 1)))
            plugged = 1.0 if self.spec.power is PowerSource.MAINS else 0.0
            points.append(MetricPoint(POWER_PLUGGED, MetricKind.GAUGE, plugged))
        return points


class PowerLossAt:
    """A machine that loses power (SIGKILL, no clean-up) the moment the agent has made one
    of `moments` durable, e.g. `install:staged`: every install step reached
    deterministically, for crash-safety tests (sim/faulty_agent.py)."""

    def __init__(self, inner: Hardware, moments: frozenset[str]) -> None:
        self._inner = inner
        self._moments = moments

    def inventory(self) -> dict[str, Any]:
        return self._inner.inventory()

    def durable(self, moment: str) -> None:
        self._inner.durable(moment)
        if moment in self._moments:
            os.kill(os.getpid(), signal.SIGKILL)
