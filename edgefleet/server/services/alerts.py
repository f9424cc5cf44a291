"""Alert service: KPI detection on ingested windows, drift and cohort analysis, and the
alert list operators read.

Detection on ingest runs inside the ingest transaction: the windows of a batch, its KPI
detectors' states and the alerts they open or close commit together, so a retried upload
can never step a detector twice. When a device's open alerts change, its desired state is
re-rendered in the same transaction (the metrics of open alerts become `anomalous_metrics`
in its telemetry section, so it samples them finer) and its long poll is woken after commit.

The periodic analysis (`analyze`) compares each device's recent KPI distribution with its own
earlier baseline (drift) and with its cohort peers (same model, same hardware), one device
per transaction, and opens or closes `drift` and `cohort` alerts.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from edgefleet.clock import Clock
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.telemetry.alerts import (
    Alert,
    AlertDecision,
    AlertKind,
    AlertMove,
    close_alert,
    cohort_drift,
    decide_from_drift,
    decide_from_event,
    detector_from_document,
    detector_to_document,
    feed_detector,
    new_kpi_detector,
    open_alert,
)
from edgefleet.core.telemetry.drift import detect_drift
from edgefleet.core.telemetry.kpi import DetectionConfig, KpiSpec, Statistic, cohort_key, kpi_points
from edgefleet.core.telemetry.rollup import merge_sketches
from edgefleet.core.telemetry.series import DeviceWindow, metric_windows
from edgefleet.core.telemetry.sketch import DDSketch
from edgefleet.core.telemetry.windows import Window
from edgefleet.errors import EdgefleetError, InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.desired import save_device
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database, Transaction

log = logging.getLogger(__name__)

MAX_ALERTS_LISTED = 500
# A device is compared with at most this many of its cohort peers (each comparison is a
# PSI over two sketches); peers are taken in id order, so the choice is stable.
MAX_COHORT_PEERS = 10
# The drift analysis reads the windows of this many devices at a time and keeps only their
# two merged sketches: a KPI's baseline is 6 h of one-minute windows (360 per device), and
# reading the whole fleet's at once held them all in memory, a peak that grew for 6 h after
# start-up (millions of windows at 10,000 devices) and left the server's RSS at it.
ANALYSIS_CHUNK_DEVICES = 100


def new_alert_id() -> str:
    return "al-" + secrets.token_hex(6)


@dataclass(frozen=True)
class AlertFilter:
    include_closed: bool = False
    closed_within_s: float = 86400.0
    device: str | None = None


def apply_decisions(
    tx: Transaction,
    device_id: str,
    decisions: Sequence[AlertDecision],
    specs: Mapping[str, KpiSpec],
    metrics: ServerMetrics,
) -> bool:
    """Open and close alerts as decided; True if the device's open alerts changed."""
    changed = False
    for decision in decisions:
        current = {(a.kind, a.kpi): a for a in tx.alerts.open_for_device(device_id)}
        existing = current.get((decision.kind, decision.kpi))
        spec = specs.get(decision.kpi)
        if decision.move is AlertMove.OPEN and existing is None:
            metrics_of = spec.metrics if spec is not None else ()
            tx.alerts.insert(open_alert(new_alert_id(), device_id, decision, metrics_of))
            metrics.alerts_opened.inc(decision.kind.value)
            changed = True
            log.info(
                "alert opened",
                extra={
                    "device_id": device_id,
                    "kind": decision.kind.value,
                    "kpi": decision.kpi,
                    "reason": decision.reason,
                },
            )
        elif decision.move is AlertMove.CLOSE and existing is not None:
            tx.alerts.close(close_alert(existing, decision.at, decision.reason))
            metrics.alerts_closed.inc(decision.kind.value)
            changed = True
            log.info(
                "alert closed",
                extra={
                    "device_id": device_id,
                    "kind": decision.kind.value,
                    "kpi": decision.kpi,
                    "reason": decision.reason,
                },
            )
    return changed


def detect_on_ingest(
    tx: Transaction,
    device_id: str,
    windows: Sequence[Window],
    detection: DetectionConfig,
    metrics: ServerMetrics,
    now: datetime,
) -> bool:
    """Feed the device's KPI detectors with a stored batch's windows; True if alerts changed."""
    wanted = {m for spec in detection.kpis for m in spec.metrics}
    relevant = [w for w in windows if w.name in wanted]
    if not relevant:
        return False
    quantiles = sorted({s.quantile for s in detection.kpis if s.statistic is Statistic.QUANTILE})
    per_metric = metric_windows(relevant, quantiles)
    decisions: list[AlertDecision] = []
    open_kpis = {a.kpi for a in tx.alerts.open_for_device(device_id) if a.kind is AlertKind.ANOMALY}
    for spec in detection.kpis:
        points = kpi_points(spec, per_metric)
        if not points:
            continue
        config = detection.detector_for(spec)
        stored = tx.telemetry.detector(device_id, spec.name)
        try:
            detector = (
                new_kpi_detector(config) if stored is None
                else detector_from_document(config, stored)
            )  # fmt: skip
        except InvalidInput:
            log.warning(
                "unreadable detector state; starting afresh",
                extra={"device_id": device_id, "kpi": spec.name},
            )
            detector = new_kpi_detector(config)
        detector, events = feed_detector(detector, points)
        tx.telemetry.save_detector(
            device_id, spec.name, detector_to_document(detector), stored is not None, now
        )
        alert_open = spec.name in open_kpis
        for event in events:
            decision = decide_from_event(spec.name, alert_open, event)
            if decision is not None:
                decisions.append(decision)
                alert_open = decision.move is AlertMove.OPEN
    specs = {s.name: s for s in detection.kpis}
    return apply_decisions(tx, device_id, decisions, specs, metrics)


class AlertService:
    def __init__(
        self, db: Database, clock: Clock, watch: DesiredStateWatch, metrics: ServerMetrics
    ) -> None:
        self._db = db
        self._clock = clock
        self._watch = watch
        self._metrics = metrics

    def list_alerts(self, ctx: OperatorContext, wanted: AlertFilter) -> list[Alert]:
        ctx.require(Permission.FLEET_READ)
        since = self._clock.now() - timedelta(seconds=wanted.closed_within_s)
        with self._db.read() as tx:
            device_ids = [tx.devices.resolve(wanted.device).id] if wanted.device else None
            return tx.alerts.listing(
                include_closed=wanted.include_closed,
                closed_since=since,
                device_ids=device_ids,
                limit=MAX_ALERTS_LISTED,
            )

    # The periodic analysis.

    def analyze(self) -> int:
        """Drift and cohort checks of every drift-enabled KPI; returns alerts changed."""
        now = self._clock.now()
        with self._db.read() as tx:
            policy = tx.telemetry.fleet_policy()
        detection = policy.detection
        changed = 0
        for spec in detection.kpis:
            if not spec.drift:
                continue
            for device_id, decisions in self._drift_decisions(spec, detection, now):
                try:
                    if self._apply(device_id, decisions, {spec.name: spec}):
                        changed += 1
                except EdgefleetError as e:
                    log.warning(
                        "drift alert update failed; next run retries",
                        extra={"device_id": device_id, "error": e.message},
                    )
        return changed

    def _drift_decisions(
        self,
        spec: KpiSpec,
        detection: DetectionConfig,
        now: datetime,
    ) -> list[tuple[str, list[AlertDecision]]]:
        now_s = int(now.timestamp())
        recent_s = now_s - detection.drift_recent_s
        baseline_s = recent_s - detection.drift_baseline_s
        # A chunk of devices at a time: of each approved device with recent windows of the
        # KPI, its cohort, its open alerts and its two merged sketches only (not the whole
        # fleet's documents and windows at once, a peak every run that left the RSS at it).
        with self._db.read() as tx:
            with_windows = tx.telemetry.devices_with_windows([spec.metric], recent_s)
        cohort_of: dict[str, str] = {}
        open_alerts: dict[str, list[Alert]] = {}
        baseline: dict[str, DDSketch] = {}
        recent: dict[str, DDSketch] = {}
        for start in range(0, len(with_windows), ANALYSIS_CHUNK_DEVICES):
            with self._db.read() as tx:
                found = tx.devices.find_many(with_windows[start : start + ANALYSIS_CHUNK_DEVICES])
                chunk = sorted(d.id for d in found.values()
                               if d.enrollment is EnrollmentState.APPROVED)  # fmt: skip
                cohort_of.update((d, cohort_key(found[d])) for d in chunk)
                open_alerts.update((d, tx.alerts.open_for_device(d)) for d in chunk)
                windows = tx.telemetry.windows(chunk, [spec.metric], baseline_s, now_s + 1)
            before, after = _split_sketches(windows, recent_s)
            baseline.update(before)
            recent.update(after)
        ids = sorted(cohort_of)
        cohorts: dict[str, list[str]] = {}
        for device_id in ids:
            cohorts.setdefault(cohort_of[device_id], []).append(device_id)
        out = []
        for device_id in ids:
            current = recent.get(device_id)
            if current is None:
                continue
            opened = {(a.kind, a.kpi) for a in open_alerts[device_id]}
            decisions = []
            own = baseline.get(device_id)
            if own is not None:
                result = detect_drift(own, current, detection.drift)
                decision = decide_from_drift(
                    AlertKind.DRIFT, spec.name, (AlertKind.DRIFT, spec.name) in opened,
                    result, now, f"its own previous {detection.drift_baseline_s // 60} min",
                )  # fmt: skip
                if decision is not None:
                    decisions.append(decision)
            peers = [p for p in cohorts[cohort_of[device_id]] if p != device_id and p in recent][
                :MAX_COHORT_PEERS
            ]
            if len(peers) + 1 >= detection.min_cohort_devices:
                result = cohort_drift(
                    [detect_drift(recent[p], current, detection.drift) for p in peers]
                )
                decision = decide_from_drift(
                    AlertKind.COHORT, spec.name, (AlertKind.COHORT, spec.name) in opened,
                    result, now, f"{len(peers)} cohort peers",
                )  # fmt: skip
                if decision is not None:
                    decisions.append(decision)
            if decisions:
                out.append((device_id, decisions))
        return out

    def _apply(
        self, device_id: str, decisions: list[AlertDecision], specs: Mapping[str, KpiSpec]
    ) -> bool:
        with self._db.transaction() as tx:
            changed = apply_decisions(tx, device_id, decisions, specs, self._metrics)
            if changed:
                save_device(tx, tx.devices.get(device_id))
        if changed:
            self._watch.notify(device_id)
        return changed


def _split_sketches(
    windows: Sequence[DeviceWindow], recent_s: int
) -> tuple[dict[str, DDSketch], dict[str, DDSketch]]:
    """Per device: the merged sketch before `recent_s` (baseline) and from it on (recent)."""
    before: dict[str, list[DDSketch]] = {}
    after: dict[str, list[DDSketch]] = {}
    for dw in windows:
        if dw.window.sketch is None:
            continue
        side = after if dw.window.start_s >= recent_s else before
        side.setdefault(dw.device_id, []).append(dw.window.sketch)
    merged_before = {d: m for d, s in before.items() if (m := merge_sketches(s)) is not None}
    merged_after = {d: m for d, s in after.items() if (m := merge_sketches(s)) is not None}
    return merged_before, merged_after
