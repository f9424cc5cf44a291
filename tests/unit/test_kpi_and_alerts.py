"""KPIs over windows, detection configuration, alert decisions and detector persistence."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.telemetry.alerts import (
    AlertDecision,
    AlertKind,
    AlertMove,
    AlertStatus,
    anomalous_metrics,
    close_alert,
    decide_from_drift,
    decide_from_event,
    detector_from_document,
    detector_to_document,
    feed_detector,
    new_kpi_detector,
    open_alert,
)
from edgefleet.core.telemetry.anomaly import AnomalyEvent, DetectorConfig, Direction, EventKind
from edgefleet.core.telemetry.drift import DriftResult, DriftStatus
from edgefleet.core.telemetry.kpi import (
    ERROR_RATE_PCT,
    P95_LATENCY_MS,
    KpiSpec,
    MetricWindow,
    Statistic,
    cohort_key,
    default_detection,
    detection_to_document,
    kpi_points,
    kpi_reading,
    kpi_value,
    parse_detection,
)
from edgefleet.core.telemetry.policy import (
    default_fleet_policy,
    fleet_policy_to_document,
    parse_fleet_policy,
    render_telemetry_section,
)
from edgefleet.core.telemetry.sampling import read_telemetry_section
from edgefleet.errors import IllegalTransition, InvalidInput

T0 = datetime(2026, 11, 27, tzinfo=UTC)
LATENCY = "inference.latency_ms"


def mw(start_s: int, count: int, total: float, q95: float | None = None) -> MetricWindow:
    quantiles = {0.95: q95} if q95 is not None else {}
    return MetricWindow(start_s, 60, count, total, 0.0, total, quantiles)


def test_kpi_values_for_each_statistic() -> None:
    detection = default_detection()
    p95, errors = detection.kpi(P95_LATENCY_MS), detection.kpi(ERROR_RATE_PCT)
    window = {LATENCY: mw(0, 10, 100.0, 31.0)}
    assert kpi_value(p95, window) == 31.0
    assert kpi_value(replace(p95, statistic=Statistic.MEAN), window) == 10.0
    assert kpi_value(replace(p95, statistic=Statistic.SUM), window) == 100.0
    ratio = {"inference.requests": mw(0, 10, 200.0), "inference.errors": mw(0, 10, 5.0)}
    assert kpi_value(errors, ratio) == 2.5
    # No error windows at all means no errors; no requests means no rate.
    assert kpi_value(errors, {"inference.requests": mw(0, 10, 200.0)}) == 0.0
    assert kpi_value(errors, {"inference.errors": mw(0, 10, 5.0)}) is None
    # Too few samples in a window: no value rather than a noisy one.
    assert kpi_value(p95, {LATENCY: mw(0, 4, 40.0, 9.0)}) is None


def test_kpi_points_pair_metrics_by_window_start() -> None:
    spec = default_detection().kpi(ERROR_RATE_PCT)
    windows = [
        ("inference.requests", mw(60, 10, 100.0)),
        ("inference.errors", mw(0, 10, 1.0)),
        ("inference.requests", mw(0, 10, 50.0)),
        ("host.cpu.percent", mw(0, 10, 50.0)),
    ]
    assert kpi_points(spec, windows) == [(0, 2.0), (60, 0.0)]


def test_kpi_reading_over_a_period_counts_samples() -> None:
    detection = default_detection()
    period = {"inference.requests": mw(0, 3, 400.0), "inference.errors": mw(0, 3, 8.0)}
    reading = kpi_reading(detection.kpi(ERROR_RATE_PCT), period)
    assert reading is not None and (reading.value, reading.samples) == (2.0, 400)
    reading = kpi_reading(detection.kpi(P95_LATENCY_MS), {LATENCY: mw(0, 2, 20.0, 12.0)})
    assert reading is not None and (reading.value, reading.samples) == (12.0, 2)


def test_detection_document_round_trips_and_overrides_defaults() -> None:
    config = parse_detection({
        "open_score": 6, "min_baseline": 5, "detector": "ewma", "drift_psi_drift": 0.5,
        "kpis": [{"name": "p99", "metric": LATENCY, "statistic": "p99", "drift": True},
                 {"name": "fps", "metric": "video.fps", "statistic": "mean",
                  "direction": "down", "min_samples": 3}],
    })  # fmt: skip
    assert config.detector.open_score == 6.0 and config.detector.min_baseline == 5
    assert config.drift.psi_drift == 0.5
    assert config.kpi("p99").quantile == 0.99 and config.kpi("p99").drift
    assert config.detector_for(config.kpi("fps")).direction is Direction.DOWN
    assert parse_detection(detection_to_document(config)) == config


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"kpis": [{"name": "x", "metric": LATENCY, "statistic": "p100"}]}, "statistic"),
        ({"kpis": [{"name": "x", "metric": LATENCY, "statistic": "ratio"}]}, "denominator"),
        ({"kpis": [{"name": "x", "metric": LATENCY, "statistic": "mean", "drift": True}]}, "drift"),
        ({"kpis": [{"name": "x", "metric": LATENCY, "statistic": "mean", "colour": 1}]}, "colour"),
        ({"open_score": 1, "close_score": 2}, "close_score < open_score"),
        ({"min_baseline": -1}, "min_baseline"),
        ({"speed": 3}, "speed"),
    ],
)
def test_bad_detection_documents_name_the_key(raw: dict, key: str) -> None:
    with pytest.raises(InvalidInput, match=key) as refused:
        parse_detection(raw)
    assert refused.value.code == "bad_policy"


def test_fleet_policy_round_trips_and_refuses_unknown_keys() -> None:
    document = fleet_policy_to_document(default_fleet_policy())
    assert parse_fleet_policy(document) == default_fleet_policy()
    with pytest.raises(InvalidInput, match="upload_intervals_s"):
        parse_fleet_policy({**document, "upload_intervals_s": 5})


def test_the_device_section_carries_the_policy_and_anomalous_metrics() -> None:
    section = render_telemetry_section(default_fleet_policy(), [LATENCY, LATENCY])
    policy, anomalous = read_telemetry_section(section)
    assert policy == default_fleet_policy().sampling
    assert anomalous == {LATENCY}
    assert read_telemetry_section(None) == (default_fleet_policy().sampling, frozenset())
    with pytest.raises(InvalidInput):
        read_telemetry_section({"policy": {"sets": []}})


def event(kind: EventKind) -> AnomalyEvent:
    return AnomalyEvent(kind, T0, 50.0, 9.0, "score 9.0 above 4 for 3 windows")


def test_alert_decisions_follow_detector_events() -> None:
    opened = decide_from_event(P95_LATENCY_MS, False, event(EventKind.OPENED))
    assert opened is not None and opened.move is AlertMove.OPEN
    assert "p95_latency_ms 50" in opened.reason
    assert decide_from_event(P95_LATENCY_MS, True, event(EventKind.OPENED)) is None
    closed = decide_from_event(P95_LATENCY_MS, True, event(EventKind.CLOSED))
    assert closed is not None and closed.move is AlertMove.CLOSE
    assert decide_from_event(P95_LATENCY_MS, False, event(EventKind.CLOSED)) is None
    assert decide_from_event(P95_LATENCY_MS, False, None) is None


def drift(status: DriftStatus) -> DriftResult:
    return DriftResult(status, 0.3, (), f"PSI 0.3 ({status})")


def test_drift_alerts_have_a_hysteresis_band() -> None:
    def decide(is_open: bool, status: DriftStatus) -> AlertMove | None:
        d = decide_from_drift(AlertKind.DRIFT, "p95", is_open, drift(status), T0, "baseline")
        return None if d is None else d.move

    assert decide(False, DriftStatus.DRIFT) is AlertMove.OPEN
    assert decide(False, DriftStatus.WARNING) is None
    assert decide(True, DriftStatus.WARNING) is None  # stays open in the band
    assert decide(True, DriftStatus.INSUFFICIENT_DATA) is None
    assert decide(True, DriftStatus.STABLE) is AlertMove.CLOSE
    with pytest.raises(InvalidInput):
        decide_from_drift(AlertKind.ANOMALY, "p95", False, drift(DriftStatus.DRIFT), T0, "x")


def test_an_alert_opens_once_and_closes_once() -> None:
    decision = AlertDecision(AlertMove.OPEN, AlertKind.ANOMALY, "p95", T0, "slow", 50.0, 9.0)
    alert = open_alert("al-1", "d-1", decision, [LATENCY, LATENCY])
    assert alert.status is AlertStatus.OPEN and alert.metrics == (LATENCY,)
    assert anomalous_metrics([alert]) == {LATENCY}
    closed = close_alert(alert, T0, "recovered")
    assert closed.status is AlertStatus.CLOSED and anomalous_metrics([closed]) == frozenset()
    with pytest.raises(IllegalTransition):
        close_alert(closed, T0, "again")


def test_a_detector_never_counts_a_window_twice_and_survives_storage() -> None:
    config = DetectorConfig(direction=Direction.UP, min_baseline=5, open_after=2)
    rng = random.Random(4)
    baseline = [(60 * i, 10.0 + rng.random()) for i in range(10)]
    detector, events = feed_detector(new_kpi_detector(config), baseline)
    assert events == [] and detector.last_start_s == 540
    again, events = feed_detector(detector, baseline)  # a retried batch changes nothing
    assert again == detector and events == []
    stored = detector_from_document(config, detector_to_document(detector))
    assert stored == detector
    _, events = feed_detector(stored, [(600, 40.0), (660, 41.0)])
    assert [e.kind for e in events] == [EventKind.OPENED]
    with pytest.raises(InvalidInput):
        detector_from_document(config, {"phase": "bogus"})


def test_cohorts_group_by_running_release_and_hardware() -> None:
    base = Device(
        "d-1",
        "a",
        "k",
        EnrollmentState.APPROVED,
        {},
        {"hardware": {"arch": "aarch64", "accelerators": ["npu"]}},
        None,
        T0,
    )
    assert cohort_key(base) == "none/aarch64+npu"
    running = replace(base, release_status={"active": {"name": "det", "version": "1.2.0"}})
    assert cohort_key(running) == "det@1.2.0/aarch64+npu"
    assert cohort_key(replace(base, inventory={})) == "none/unknown"


def test_custom_kpi_spec_metrics() -> None:
    spec = KpiSpec("x", "a", Statistic.RATIO, denominator="b")
    assert spec.metrics == ("a", "b")
