"""What `/metrics` exposes: this process's counters plus fleet aggregates read from the store
at scrape time (devices by enrollment and connection status, open alerts, telemetry totals,
active rollouts with their devices, waves and gates).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Collection

from edgefleet import __version__
from edgefleet.clock import Clock
from edgefleet.core.device import ConnectionStatus, classify_connection
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.telemetry.alerts import AlertKind
from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.prometheus import MetricFamily
from edgefleet.server.services.rollout_metrics import MAX_ROLLOUTS, rollout_families
from edgefleet.store import Database


class FleetMetricsService:
    def __init__(self, db: Database, clock: Clock, metrics: ServerMetrics) -> None:
        self._db = db
        self._clock = clock
        self._metrics = metrics

    def families(self, names: Collection[str] | None = None) -> list[MetricFamily]:
        """Every family, or only those named (`/metrics?name[]=...`, as Prometheus' own
        client libraries filter). Naming only this process's families skips the store: a
        scraper that polls a counter often costs the control plane next to nothing."""
        process = [self._build_info(), self._start_time(), *self._metrics.families()]
        if names is not None:
            wanted = set(names)
            if wanted <= {family.name for family in process}:
                return [family for family in process if family.name in wanted]
            return [family for family in self._fleet_families() + process if family.name in wanted]
        return self._fleet_families() + process

    def _build_info(self) -> MetricFamily:
        info = MetricFamily("edgefleet_build_info", "gauge", "The running edgefleet version.")
        info.add(1, {"version": __version__})
        return info

    def _start_time(self) -> MetricFamily:
        started = MetricFamily(
            "edgefleet_process_start_time_seconds",
            "gauge",
            "Start time of this control-plane process since the Unix epoch.",
        )
        started.add(round(self._metrics.started_at_s, 3))
        return started

    def _fleet_families(self) -> list[MetricFamily]:
        """The fleet aggregates, read from the store."""
        now = self._clock.now()
        with self._db.read() as tx:
            facts = tx.devices.connection_facts()
            open_alerts = tx.alerts.count_open_by_kind()
            uploading, batches, dropped_windows, dropped_batches_total = tx.telemetry.fleet_totals()
            rollouts = tx.rollouts.recent(active_only=True, limit=MAX_ROLLOUTS)
            rollout_devices = tx.rollouts.state_counts([r.id for r in rollouts])
        by_status = Tally(
            (enrollment, classify_connection(last_seen, now, interval_s, presence).value)
            for enrollment, last_seen, interval_s, presence in facts
        )
        fleet = MetricFamily(
            "edgefleet_devices",
            "gauge",
            "Devices by enrollment state and connection status (from the last heartbeat).",
        )
        for enrollment in EnrollmentState:
            for status in ConnectionStatus:
                fleet.add(
                    by_status.get((enrollment.value, status.value), 0),
                    {"enrollment": enrollment.value, "status": status.value},
                )
        alerts = MetricFamily("edgefleet_alerts_open", "gauge", "Open alerts, by kind.")
        for kind in AlertKind:
            alerts.add(open_alerts.get(kind.value, 0), {"kind": kind.value})
        reporting = MetricFamily(
            "edgefleet_telemetry_devices_reporting",
            "gauge",
            "Devices that have uploaded at least one telemetry batch.",
        )
        reporting.add(uploading)
        stored = MetricFamily(
            "edgefleet_telemetry_stored_batches",
            "gauge",
            "Telemetry batches stored over the fleet's life (all replicas).",
        )
        stored.add(batches)
        dropped = MetricFamily(
            "edgefleet_telemetry_device_dropped_windows",
            "gauge",
            "Windows devices report having dropped from full queues, summed over the fleet.",
        )
        dropped.add(dropped_windows)
        dropped_batches = MetricFamily(
            "edgefleet_telemetry_device_dropped_batches",
            "gauge",
            "Batches devices report having dropped from full queues, summed over the fleet.",
        )
        dropped_batches.add(dropped_batches_total)
        return [
            fleet, alerts, reporting, stored, dropped, dropped_batches,
            *rollout_families(rollouts, rollout_devices),
        ]  # fmt: skip
