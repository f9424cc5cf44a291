"""What the agent tells the control plane about the node in every heartbeat, for workload
placement: the address clients reach its workloads at, its power (battery charge, power
source) and its CPU load. The control plane forecasts battery and load from these samples
and migrates workloads off a node before it runs dry (docs/workloads.md).

Battery comes from psutil where the machine has one. For tests and demos a simulated
battery replaces it (or EDGEFLEET_SIMULATED_BATTERY); never use it on a real device:

    --simulated-battery 80:6          starts at 80% and loses 6 percentage points per minute
                                      from the agent's start (`START[:DRAIN_PER_MIN]`)
    --simulated-battery file:PATH     the charge is the number in PATH, read at every
                                      heartbeat (a test or demo writes it as it likes)
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from edgefleet.clock import Clock
from edgefleet.core import protocol
from edgefleet.core.protocol import PowerSource
from edgefleet.errors import SettingsError


@dataclass(frozen=True)
class SimulatedBattery:
    start_pct: float
    drain_pct_per_min: float = 0.0
    path: Path | None = None  # read the charge from this file instead

    @classmethod
    def parse(cls, text: str) -> SimulatedBattery:
        """`START[:DRAIN_PER_MIN]`, e.g. `80:6`, or `file:PATH`."""
        if text.startswith("file:"):
            return cls(100.0, path=Path(text.removeprefix("file:")))
        start, _, drain = text.partition(":")
        try:
            battery = cls(float(start), float(drain or 0))
        except ValueError:
            raise SettingsError(
                f"bad setting simulated_battery (--simulated-battery): {text!r} is not "
                "START[:DRAIN_PER_MIN], e.g. 80:6"
            ) from None
        if not 0 <= battery.start_pct <= 100 or battery.drain_pct_per_min < 0:
            raise SettingsError("bad setting simulated_battery (--simulated-battery): need "
                                "0 <= START <= 100 and DRAIN_PER_MIN >= 0")  # fmt: skip
        return battery

    def level_pct(self, elapsed_s: float) -> float | None:
        if self.path is not None:
            try:
                return min(100.0, max(0.0, float(self.path.read_text().strip())))
            except (OSError, ValueError):
                return None
        return max(0.0, self.start_pct - self.drain_pct_per_min * elapsed_s / 60)


class NodeStatus:
    def __init__(self, clock: Clock, address: str, simulated_battery: str | None = None) -> None:
        self._clock = clock
        self._address = address
        self._battery = None if not simulated_battery else SimulatedBattery.parse(
            simulated_battery)  # fmt: skip
        self._started_s = clock.monotonic()

    def report(self, *, scheduled: bool) -> protocol.NodeStatus:
        """The heartbeat's `node` section; `scheduled`: sent on the heartbeat schedule."""
        source, battery_pct = PowerSource.MAINS, None
        if self._battery is not None:
            level = self._battery.level_pct(self._clock.monotonic() - self._started_s)
            source, battery_pct = PowerSource.BATTERY, None if level is None else round(level, 2)
        elif (battery := _host_battery()) is not None:
            source = PowerSource.MAINS if battery[1] else PowerSource.BATTERY
            battery_pct = battery[0]
        return protocol.NodeStatus(
            address=self._address,
            cpu_load=_cpu_load(),
            power_source=source,
            battery_pct=battery_pct,
            scheduled=scheduled,
        )


def _cpu_load() -> float | None:
    try:
        return round(os.getloadavg()[0] / (os.cpu_count() or 1), 3)
    except OSError:
        return None


def _host_battery() -> tuple[float, bool] | None:
    """(charge %, plugged in) from psutil, if this machine has a battery."""
    try:
        import psutil
    except ImportError:
        return None
    sensors = getattr(psutil, "sensors_battery", None)
    reading = None
    with contextlib.suppress(Exception):  # missing sensors raise all sorts of things
        reading = sensors() if sensors is not None else None
    if reading is None:
        return None
    return round(float(reading.percent), 1), bool(reading.power_plugged)
