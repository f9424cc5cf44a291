"""How busy a simulated device is over its local day: the traffic and CPU shape the lab's
predictive evaluations (`lab/predictive.py`) play, per device class.

    activity:                    # in a device class; absent: busy around the clock
      busy: [8, 21]              # local hours the site is busy (opening, closing)
      jitter_h: 1.5              # each device opens and closes up to this much earlier or later
      quiet_level: 0.1           # traffic outside busy hours, as a share of busy traffic
      weekend_level: 0.6         # busy-hour traffic on Saturday and Sunday, as a share
      always_on_percent: 10      # devices busy around the clock (24/7 sites)
      noise_percent: 15          # hour-to-hour spread of the traffic
      busy_cpu_percent: 50       # CPU the workload adds at full traffic (to base_cpu_percent)

Each device draws its own opening and closing hours and whether it is always on from its
seed, so a fleet and a seed always give the same habits. `busy` may wrap midnight
(`[20, 6]`: a night shift).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from edgefleet.core.manifest import check_keys, read_list, read_mapping, read_number
from edgefleet.errors import InvalidInput

_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class DailyActivity:
    busy_from_h: float = 0.0
    busy_until_h: float = 24.0
    jitter_h: float = 0.0
    quiet_level: float = 1.0
    weekend_level: float = 1.0
    always_on_percent: float = 100.0
    noise_percent: float = 0.0
    busy_cpu_percent: float = 30.0


def parse_activity(value: object, path: str) -> DailyActivity:
    """A class's `activity` section; InvalidInput names the field path."""
    data = read_mapping(value, path)
    check_keys(data, frozenset({"busy", "jitter_h", "quiet_level", "weekend_level",
                                "always_on_percent", "noise_percent", "busy_cpu_percent"}),
               path)  # fmt: skip
    busy = read_list(data.get("busy", [0, 24]), f"{path}.busy")
    if len(busy) != 2:
        raise InvalidInput(f"{path}.busy: expected [opening hour, closing hour]")
    return DailyActivity(
        busy_from_h=read_number(busy[0], f"{path}.busy[0]", 0, 24),
        busy_until_h=read_number(busy[1], f"{path}.busy[1]", 0, 24),
        jitter_h=read_number(data.get("jitter_h", 0), f"{path}.jitter_h", 0, 12),
        quiet_level=read_number(data.get("quiet_level", 1), f"{path}.quiet_level", 0, 1),
        weekend_level=read_number(data.get("weekend_level", 1), f"{path}.weekend_level", 0, 1),
        always_on_percent=read_number(data.get("always_on_percent", 0),
                                      f"{path}.always_on_percent", 0, 100),
        noise_percent=read_number(data.get("noise_percent", 0), f"{path}.noise_percent", 0, 100),
        busy_cpu_percent=read_number(data.get("busy_cpu_percent", 30),
                                     f"{path}.busy_cpu_percent", 0, 100),
    )  # fmt: skip


def _unit(seed: int, index: int) -> float:
    """A stable uniform draw in [0, 1) for (seed, index): splitmix64, no shared state."""
    x = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return (x ^ (x >> 31)) / 2**64


class DeviceActivity:
    """One device's habits: its traffic level (0..1 of its busy traffic) at any instant."""

    def __init__(self, activity: DailyActivity, time_zone: str | None, seed: int) -> None:
        rng = random.Random(seed)
        self.activity = activity
        self.zone = ZoneInfo(time_zone or "UTC")
        self.seed = seed
        self.always_on = rng.uniform(0, 100) < activity.always_on_percent
        self.opens_h = activity.busy_from_h + rng.uniform(-activity.jitter_h, activity.jitter_h)
        self.closes_h = activity.busy_until_h + rng.uniform(-activity.jitter_h, activity.jitter_h)

    def _busy(self, local_h: float) -> bool:
        opens, closes = self.opens_h % 24, self.closes_h % 24
        if self.activity.busy_until_h - self.activity.busy_from_h >= 24:
            return True
        if opens <= closes:
            return opens <= local_h < closes
        return local_h >= opens or local_h < closes

    def level(self, at: datetime) -> float:
        """Traffic at `at` as a share of the device's busy traffic (noise included)."""
        a = self.activity
        local = at.astimezone(self.zone)
        local_h = local.hour + local.minute / 60
        level = 1.0 if self.always_on or self._busy(local_h) else a.quiet_level
        if local.weekday() >= 5 and level == 1.0 and not self.always_on:
            level = a.weekend_level
        hour_index = int(at.timestamp()) // 3600
        noise = 1.0 + a.noise_percent / 100 * (2 * _unit(self.seed, hour_index) - 1)
        return max(0.0, level * noise)

    def cpu_percent(self, at: datetime, base_cpu_percent: float) -> float:
        return min(100.0, base_cpu_percent + self.activity.busy_cpu_percent * self.level(at))
