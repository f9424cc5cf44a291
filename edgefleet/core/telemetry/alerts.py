"""Alerts on device KPIs: when one opens, when it closes, and what it changes on the device.

    open ──close──▶ closed (final: a new incident opens a new alert)

Three kinds, at most one open alert per (device, kind, KPI):

- `anomaly`: the device's own detector for the KPI (core.anomaly, robust z-score or EWMA
  with hysteresis) opened or closed;
- `drift`: the KPI metric's distribution over the recent period moved away from the
  device's own earlier baseline (core.drift);
- `cohort`: the device's recent distribution differs from its cohort peers' (same model on
  the same hardware) over the same period.

Drift verdicts have their own hysteresis: an alert opens on DRIFT and closes only on STABLE;
WARNING (and too little data) leave it as it is.

While any alert is open on a device, the metrics of its KPIs are *anomalous* for the
sampling policy (core.sampling), so the device samples them finer until the alert closes.

A KPI detector's state is stored as plain JSON (`detector_to_document`); its tuning comes
from the current policy each time it is loaded, so operators can retune it in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from edgefleet.core.telemetry.anomaly import (
    AlertPhase,
    AnomalyEvent,
    DetectorConfig,
    DetectorState,
    EventKind,
    new_detector,
    step,
)
from edgefleet.core.telemetry.drift import DriftResult, DriftStatus
from edgefleet.errors import IllegalTransition, InvalidInput


class AlertKind(StrEnum):
    ANOMALY = "anomaly"
    DRIFT = "drift"
    COHORT = "cohort"


class AlertStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Alert:
    id: str
    device_id: str
    kind: AlertKind
    kpi: str
    metrics: tuple[str, ...]  # what the device should sample finer while it is open
    status: AlertStatus
    opened_at: datetime
    open_reason: str
    value: float | None = None  # the KPI value (or PSI) that opened it
    score: float | None = None
    closed_at: datetime | None = None
    close_reason: str | None = None


class AlertMove(StrEnum):
    OPEN = "open"
    CLOSE = "close"


@dataclass(frozen=True)
class AlertDecision:
    move: AlertMove
    kind: AlertKind
    kpi: str
    at: datetime
    reason: str
    value: float | None = None
    score: float | None = None


def open_alert(
    alert_id: str, device_id: str, decision: AlertDecision, metrics: Sequence[str]
) -> Alert:
    """A new open alert from an OPEN decision."""
    if decision.move is not AlertMove.OPEN:
        raise IllegalTransition("an alert opens only from an open decision")
    return Alert(
        id=alert_id,
        device_id=device_id,
        kind=decision.kind,
        kpi=decision.kpi,
        metrics=tuple(sorted(set(metrics))),
        status=AlertStatus.OPEN,
        opened_at=decision.at,
        open_reason=decision.reason,
        value=decision.value,
        score=decision.score,
    )


def close_alert(alert: Alert, at: datetime, reason: str) -> Alert:
    """`alert` closed; closing a closed alert is an IllegalTransition."""
    if alert.status is not AlertStatus.OPEN:
        raise IllegalTransition(f"alert {alert.id} is already {alert.status}")
    return replace(alert, status=AlertStatus.CLOSED, closed_at=at, close_reason=reason)


def decide_from_event(
    kpi: str, alert_open: bool, event: AnomalyEvent | None
) -> AlertDecision | None:
    """Open on a detector's OPENED event, close on CLOSED, nothing otherwise (or when the
    alert is already in that state, e.g. after the detector was reset)."""
    if event is None:
        return None
    if event.kind is EventKind.OPENED and not alert_open:
        return AlertDecision(
            AlertMove.OPEN, AlertKind.ANOMALY, kpi, event.at,
            f"{kpi} {event.value:.4g}: {event.reason}", event.value, event.score,
        )  # fmt: skip
    if event.kind is EventKind.CLOSED and alert_open:
        return AlertDecision(
            AlertMove.CLOSE, AlertKind.ANOMALY, kpi, event.at,
            f"{kpi} back to {event.value:.4g}: {event.reason}", event.value, event.score,
        )  # fmt: skip
    return None


def decide_from_drift(
    kind: AlertKind, kpi: str, alert_open: bool, result: DriftResult, now: datetime,
    against: str,
) -> AlertDecision | None:  # fmt: skip
    """Open on DRIFT, close on STABLE, else keep (the band between is the hysteresis).
    `against` names the baseline in the reason ("its own last 6h", "3 cohort peers")."""
    if kind is AlertKind.ANOMALY:
        raise InvalidInput("drift decisions are for drift and cohort alerts", code="bad_alert")
    if result.status is DriftStatus.DRIFT and not alert_open:
        return AlertDecision(
            AlertMove.OPEN, kind, kpi, now,
            f"{kpi} distribution drifted against {against}: {result.reason}", result.psi,
        )  # fmt: skip
    if result.status is DriftStatus.STABLE and alert_open:
        return AlertDecision(
            AlertMove.CLOSE, kind, kpi, now,
            f"{kpi} distribution stable against {against}: {result.reason}", result.psi,
        )  # fmt: skip
    return None


def cohort_drift(results: Sequence[DriftResult]) -> DriftResult:
    """One verdict from a device's comparisons with each of its peers: DRIFT when more
    than half of the peers with enough data say DRIFT, STABLE when more than half say
    STABLE, WARNING in between. Comparing peer by peer (not against all peers merged) keeps
    one slow device from making its healthy peers look like outliers.

    >>> ok, off = (DriftResult(DriftStatus.STABLE, 0.01, (), "ok"),
    ...            DriftResult(DriftStatus.DRIFT, 0.9, (), "PSI 0.900"))
    >>> cohort_drift([off, off, ok]).status, cohort_drift([off, ok]).status
    (<DriftStatus.DRIFT: 'drift'>, <DriftStatus.WARNING: 'warning'>)
    """
    judged = [r for r in results if r.status is not DriftStatus.INSUFFICIENT_DATA]
    if not judged:
        return DriftResult(DriftStatus.INSUFFICIENT_DATA, None, (), "no peer has enough data")
    drifted = [r for r in judged if r.status is DriftStatus.DRIFT]
    stable = [r for r in judged if r.status is DriftStatus.STABLE]
    psis = sorted(r.psi for r in judged if r.psi is not None)
    median_psi = psis[len(psis) // 2] if psis else None
    if 2 * len(drifted) > len(judged):
        status = DriftStatus.DRIFT
        worst = max(drifted, key=lambda r: r.psi or 0.0)
        reason = f"differs from {len(drifted)} of {len(judged)} peers (worst: {worst.reason})"
    elif 2 * len(stable) > len(judged):
        status = DriftStatus.STABLE
        reason = f"like {len(stable)} of {len(judged)} peers"
    else:
        status = DriftStatus.WARNING
        reason = f"differs from {len(drifted)} of {len(judged)} peers"
    return DriftResult(status, median_psi, (), reason)


def anomalous_metrics(alerts: Iterable[Alert]) -> frozenset[str]:
    """The metrics a device should sample finer: those of its open alerts."""
    return frozenset(m for a in alerts if a.status is AlertStatus.OPEN for m in a.metrics)


# --- KPI detectors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KpiDetector:
    """A detector for one KPI of one device, and the last window it has seen."""

    state: DetectorState
    last_start_s: int | None = None


def new_kpi_detector(config: DetectorConfig) -> KpiDetector:
    return KpiDetector(new_detector(config))


def feed_detector(
    detector: KpiDetector, points: Sequence[tuple[int, float]]
) -> tuple[KpiDetector, list[AnomalyEvent]]:
    """Step through (window start, value) points in time order; windows at or before the
    last one seen are skipped, so a window is never counted twice."""
    state, last = detector.state, detector.last_start_s
    events = []
    for start_s, value in sorted(points):
        if last is not None and start_s <= last:
            continue
        state, event = step(state, value, datetime.fromtimestamp(start_s, UTC))
        last = start_s
        if event is not None:
            events.append(event)
    return KpiDetector(state, last), events


def detector_to_document(detector: KpiDetector) -> dict[str, Any]:
    """The learned part of a detector as JSON data (the tuning lives in the policy)."""
    s = detector.state
    return {
        "phase": s.phase.value,
        "history": list(s.history),
        "mean": s.mean,
        "variance": s.variance,
        "seen": s.seen,
        "streak": s.streak,
        "opened_at": s.opened_at.isoformat() if s.opened_at else None,
        "last_score": s.last_score,
        "last_start_s": detector.last_start_s,
    }


def detector_from_document(config: DetectorConfig, document: Mapping[str, Any]) -> KpiDetector:
    """A detector with `config` and the learned state in `document` (from
    `detector_to_document`); the history is cut to the configured baseline length."""
    try:
        opened = document.get("opened_at")
        state = DetectorState(
            config=config,
            phase=AlertPhase(document["phase"]),
            history=tuple(float(x) for x in document["history"])[-config.baseline_windows :],
            mean=float(document["mean"]),
            variance=float(document["variance"]),
            seen=int(document["seen"]),
            streak=int(document["streak"]),
            opened_at=datetime.fromisoformat(opened) if opened else None,
            last_score=document.get("last_score"),
        )
        last = document.get("last_start_s")
        return KpiDetector(state, None if last is None else int(last))
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"stored detector state is unreadable: {e}", code="bad_detector") from e
