"""Each device's quiet hours, learned from its stored telemetry, for `window: predicted`.

The rollout controller asks for the profiles of a rollout's devices before each decision.
A profile is learned (`core.telemetry.quiet_hours`) from the last `HISTORY_DAYS` of the
device's `inference.requests` and `host.cpu.percent` windows (raw, and hourly rollups past
the raw retention), which the store adds up per hour, in the device's own zone (UTC when
it reports none), and kept for the rest of the hour: a new hour is the smallest change the
profile can see, so devices are read once an hour, not at every rescan. The cache is per
process; two replicas each learn the same profile from the same rows.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime, timedelta

from edgefleet.core.rollouts.maintenance import usable_time_zone
from edgefleet.core.telemetry.quiet_hours import (
    CPU_METRIC,
    REQUESTS_METRIC,
    QuietHours,
    hour_samples,
    learn_quiet_hours,
)
from edgefleet.core.telemetry.rollup import HourTotal
from edgefleet.store import Transaction

HISTORY_DAYS = 28
MAX_CACHED = 100_000


class QuietHoursReader:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, str, QuietHours]] = {}

    def profiles(
        self, tx: Transaction, zones: Mapping[str, str | None], now: datetime
    ) -> dict[str, QuietHours]:
        """The profile of each device in `zones` (device id -> its reported zone) at `now`."""
        hour = int(now.timestamp()) // 3600
        out: dict[str, QuietHours] = {}
        missing: dict[str, str] = {}
        with self._lock:
            for device_id, reported in zones.items():
                zone = usable_time_zone(reported) or "UTC"
                cached = self._cache.get(device_id)
                if cached is not None and cached[0] == hour and cached[1] == zone:
                    out[device_id] = cached[2]
                else:
                    missing[device_id] = zone
        if not missing:
            return out
        since_s = int((now - timedelta(days=HISTORY_DAYS)).timestamp())
        found = tx.telemetry.hourly_totals(
            sorted(missing), [REQUESTS_METRIC, CPU_METRIC], since_s, int(now.timestamp())
        )
        by_device: dict[str, list[HourTotal]] = {d: [] for d in missing}
        for total in found:
            by_device[total.device_id].append(total)
        learned = {
            d: learn_quiet_hours(hour_samples(by_device[d]), now, zone)
            for d, zone in missing.items()
        }
        with self._lock:
            if len(self._cache) + len(learned) > MAX_CACHED:
                self._cache.clear()
            for device_id, profile in learned.items():
                self._cache[device_id] = (hour, missing[device_id], profile)
        return out | learned
