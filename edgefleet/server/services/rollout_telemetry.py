"""What the rollout gates read from telemetry, per updated device.

The windows, chosen here:

- *after* the update: from the moment the controller first saw the device report the
  release installed (`installed_at`) until now — windows starting before the install, which
  may hold the old release's traffic, are left out;
- the KPI *baseline*: the `KPI_BASELINE_S` (one hour) before the rollout first assigned the
  release to the device (`first_assigned_at`), so retries never move it and it never holds
  the new release's traffic.

Workload requests and errors are the `inference.requests` and `inference.errors` counters
the example workload sends over StatsD (any workload may send them); KPIs are the fleet
telemetry policy's, read by `TelemetryService.kpi_summary`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from edgefleet.controllers.rollout import needs_telemetry
from edgefleet.core.rollouts.gates import DeviceTelemetry
from edgefleet.core.rollouts.record import DeviceRecord
from edgefleet.core.rollouts.rollout import Rollout
from edgefleet.core.telemetry.kpi import ERRORS_METRIC, REQUESTS_METRIC, KpiReading
from edgefleet.server.services.telemetry import TelemetryService
from edgefleet.store import Database

KPI_BASELINE_S = 3600.0


def gate_telemetry(
    db: Database,
    telemetry: TelemetryService,
    rollout: Rollout,
    records: Mapping[str, DeviceRecord],
    installed: Mapping[str, datetime],
    now: datetime,
) -> dict[str, DeviceTelemetry]:
    """The gate telemetry of every device of waves 0..current that is installed; `installed`
    gives, per device, when it was first seen installed (for devices seen just now)."""
    gates = rollout.spec.gates
    if rollout.plan is None or not needs_telemetry(gates):
        return {}
    kpi_names = {g.kpi for g in gates.kpis}
    installed_since: dict[str, datetime] = {}
    for device_id in rollout.plan.devices_through(rollout.wave):
        record = records.get(device_id)
        since = installed.get(device_id) or (record.installed_at if record else None)
        if record is not None and since is not None and since < now:
            installed_since[device_id] = since
    counts: dict[str, tuple[int, int]] = {}
    if gates.workload_error_rate is not None:
        counts = _workload_counts(db, installed_since, now)
    out: dict[str, DeviceTelemetry] = {}
    for device_id, since in installed_since.items():
        requests, errors = counts.get(device_id, (0, 0))
        before: dict[str, KpiReading] = {}
        after: dict[str, KpiReading] = {}
        record = records[device_id]
        first = record.first_assigned_at or record.device.assigned_at
        if kpi_names and first is not None:
            start = first - timedelta(seconds=KPI_BASELINE_S)
            before = _kpis(telemetry, device_id, start, first, kpi_names)
            # The same windows as the workload counts: those started after the install.
            after = _kpis(telemetry, device_id, since + timedelta(seconds=1), now, kpi_names)
        out[device_id] = DeviceTelemetry(requests, errors, before, after)
    return out


def _workload_counts(
    db: Database, since: Mapping[str, datetime], until: datetime
) -> dict[str, tuple[int, int]]:
    """(requests, errors) per device in the windows that started after its `since` (a
    window starting in the install's second may straddle it, so it is left out)."""
    if not since:
        return {}
    first_s = min(int(t.timestamp()) for t in since.values()) + 1
    with db.read() as tx:
        windows = tx.telemetry.windows(
            sorted(since), [REQUESTS_METRIC, ERRORS_METRIC], first_s,
            int(until.timestamp()) + 1, rollups=False,
        )  # fmt: skip
    totals: dict[str, list[float]] = {d: [0.0, 0.0] for d in since}
    for dw in windows:
        if dw.window.start_s < int(since[dw.device_id].timestamp()) + 1:
            continue
        totals[dw.device_id][0 if dw.window.name == REQUESTS_METRIC else 1] += dw.window.sum
    return {d: (round(r), round(e)) for d, (r, e) in totals.items()}


def _kpis(
    telemetry: TelemetryService,
    device_id: str,
    since: datetime,
    until: datetime,
    names: set[str],
) -> dict[str, KpiReading]:
    if until <= since:
        return {}
    summary = telemetry.kpi_summary([device_id], REQUESTS_METRIC, since, until)
    readings = summary.kpis.get(device_id, {})
    return {name: reading for name, reading in readings.items() if name in names}
