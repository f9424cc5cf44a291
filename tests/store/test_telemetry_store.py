"""Telemetry on every backend: the repositories, and the telemetry and alert services over a
real database with a fixed clock (exactly-once ingest, detection, drift, retention, queries).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.telemetry.alerts import (
    AlertDecision,
    AlertKind,
    AlertMove,
    AlertStatus,
    open_alert,
)
from edgefleet.core.telemetry.ingest import IngestCursor
from edgefleet.core.telemetry.sketch import DDSketch
from edgefleet.core.telemetry.windows import MetricKind, Window
from edgefleet.core.telemetry.wire import Batch, encode_batch
from edgefleet.errors import Conflict, InvalidInput, StoreError
from edgefleet.security.rbac import Principal, Role
from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.services import alerts as alerts_service
from edgefleet.server.services.alerts import AlertFilter, AlertService
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.desired import render_device
from edgefleet.server.services.telemetry import IngestResult, TelemetryService
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database
from tests.fake_clock import FakeClock

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
T0_S = int(T0.timestamp())
LATENCY = "inference.latency_ms"
ADMIN = OperatorContext(Principal("tok-1", "alice", Role.ADMIN), "req-1")
VIEWER = OperatorContext(Principal("tok-2", "val", Role.VIEWER), "req-2")


def timing(start_s: int, values: list[float], length_s: int = 60, tags: tuple = ()) -> Window:
    sketch = DDSketch()
    for v in values:
        sketch.add(v)
    return Window(
        LATENCY,
        MetricKind.TIMING,
        tags,
        start_s,
        length_s,
        len(values),
        sum(values),
        min(values),
        max(values),
        values[-1],
        sketch,
    )


def gauge(start_s: int, value: float, name: str = "host.cpu.percent") -> Window:
    return Window(name, MetricKind.GAUGE, (), start_s, 60, 2, 2 * value, value, value, value)


def add_device(db: Database, device_id: str, arch: str = "aarch64") -> Device:
    device = Device(
        id=device_id, name=device_id, public_key=f"key-{device_id}",
        enrollment=EnrollmentState.APPROVED, labels={"site": "a"},
        inventory={"hardware": {"arch": arch}}, enrollment_token_id=None, created_at=T0,
        last_seen=T0,
    )  # fmt: skip
    with db.transaction() as tx:
        rendered = render_device(tx, device)
        tx.devices.insert(rendered)
    return rendered


def test_windows_round_trip_with_sketches_and_tags(db: Database) -> None:
    windows = [timing(T0_S, [1.5, 2.5, 40.0], tags=(("model", "v3"),)), gauge(T0_S, 12.5)]
    with db.transaction() as tx:
        tx.telemetry.insert_windows("d-1", 1, windows)
    with db.read() as tx:
        found = tx.telemetry.windows(["d-1"], [LATENCY, "host.cpu.percent"], T0_S, T0_S + 60)
        assert tx.telemetry.batch_window_counts("d-1") == {1: 2}
        assert tx.telemetry.metric_names(["d-1"], T0_S) == ["host.cpu.percent", LATENCY]
    assert sorted((dw.window for dw in found), key=lambda w: w.name) == sorted(
        windows, key=lambda w: w.name
    )
    # A batch's windows are keyed by (device, seq, position): a second insert is refused.
    with pytest.raises(StoreError), db.transaction() as tx:
        tx.telemetry.insert_windows("d-1", 1, windows)


def test_cursor_updates_are_conditional(db: Database) -> None:
    first = IngestCursor(acked_through_seq=1, batches_stored=1, windows_stored=3, last_batch_at=T0)
    with db.transaction() as tx:
        tx.telemetry.save_cursor("d-1", None, first)
    with pytest.raises(Conflict), db.transaction() as tx:
        tx.telemetry.save_cursor("d-1", None, first)  # someone created it meanwhile
    with pytest.raises(Conflict), db.transaction() as tx:
        tx.telemetry.save_cursor("d-1", IngestCursor(), replace(first, acked_through_seq=2))
    with db.transaction() as tx:
        tx.telemetry.save_cursor("d-1", first, replace(first, acked_through_seq=2))
    with db.read() as tx:
        assert tx.telemetry.cursor("d-1") == replace(first, acked_through_seq=2)
        assert tx.telemetry.cursor("d-2") is None


def test_policy_versions_and_alerts(db: Database) -> None:
    with db.transaction() as tx:
        assert tx.telemetry.policy_record() is None
        assert tx.telemetry.save_policy({"sets": []}, 0, "alice", T0) == 1
    with pytest.raises(Conflict), db.transaction() as tx:
        tx.telemetry.save_policy({"sets": []}, 0, "bob", T0)
    decision = AlertDecision(AlertMove.OPEN, AlertKind.ANOMALY, "p95", T0, "slow", 50.0, 9.0)
    alert = open_alert("al-1", "d-1", decision, [LATENCY])
    with db.transaction() as tx:
        tx.alerts.insert(alert)
        assert tx.alerts.count_open_by_kind() == {"anomaly": 1}
        tx.alerts.close(replace(alert, status=AlertStatus.CLOSED, closed_at=T0, close_reason="ok"))
    with pytest.raises(Conflict), db.transaction() as tx:
        tx.alerts.close(alert)
    with db.read() as tx:
        assert tx.alerts.open_for_device("d-1") == []
        assert [a.id for a in tx.alerts.listing(include_closed=True)] == ["al-1"]
        assert tx.alerts.listing(include_closed=False) == []
        assert tx.alerts.get("al-1").close_reason == "ok"


def services(
    db: Database, tmp_path: Path, clock: FakeClock, **settings: Any
) -> tuple[TelemetryService, AlertService, ServerMetrics]:
    config = ServerSettings(data_dir=tmp_path, **settings)
    metrics = ServerMetrics()
    watch = DesiredStateWatch()
    return (
        TelemetryService(db, clock, watch, metrics, config),
        AlertService(db, clock, watch, metrics),
        metrics,
    )


def upload(
    telemetry: TelemetryService,
    db: Database,
    device_id: str,
    batch: Batch,
    dropped_through: int = 0,
    ahead_s: int = 0,
) -> IngestResult:
    """Upload `batch` signed by a device whose clock is `ahead_s` ahead of the server's."""
    with db.read() as tx:
        device = tx.devices.get(device_id)
    signed_at_s = int(telemetry.now().timestamp()) + ahead_s
    return telemetry.ingest(device, encode_batch(batch), dropped_through, signed_at_s)


def test_ingest_stores_each_sequence_once_and_refusals_store_nothing(
    db: Database, tmp_path: Path
) -> None:
    telemetry, _, metrics = services(db, tmp_path, FakeClock(T0))
    add_device(db, "d-1")
    first = Batch(1, (gauge(T0_S, 10.0), gauge(T0_S + 60, 11.0)))
    assert upload(telemetry, db, "d-1", first).acked_through_seq == 1
    refusals = {
        "duplicate_batch": lambda: upload(telemetry, db, "d-1", first),
        "sequence_gap": lambda: upload(telemetry, db, "d-1", Batch(3, first.windows)),
        "bad_dropped_through": lambda: upload(telemetry, db, "d-1", Batch(2, first.windows), 2),
    }
    for code, attempt in refusals.items():
        with pytest.raises((Conflict, InvalidInput)) as refused:
            attempt()
        assert refused.value.code == code
    with db.read() as tx:
        device = tx.devices.get("d-1")
    with pytest.raises(InvalidInput) as corrupt:
        telemetry.ingest(device, b"\x28\xb5\x2f\xfd garbage", 0, T0_S)
    assert corrupt.value.code == "corrupt_batch"
    # The device dropped 2..4 on overflow and says so: the server steps over the gap.
    fifth = Batch(5, (gauge(T0_S + 120, 12.0),), dropped_batches_total=3, dropped_windows_total=7)
    assert upload(telemetry, db, "d-1", fifth, dropped_through=4).acked_through_seq == 5
    cursor = telemetry.cursor("d-1")
    assert (cursor.acked_through_seq, cursor.batches_stored, cursor.windows_stored) == (5, 2, 3)
    assert (cursor.dropped_batches_total, cursor.dropped_windows_total) == (3, 7)
    with db.read() as tx:
        assert tx.telemetry.batch_window_counts("d-1") == {1: 2, 5: 1}
    assert metrics.batches_accepted.value() == 2
    assert metrics.batches_refused.value("duplicate_batch") == 1
    assert metrics.batches_refused.value("corrupt_batch") == 1


def test_a_wrong_device_clock_is_undone_and_no_window_is_stored_in_the_future(
    db: Database, tmp_path: Path
) -> None:
    clock = FakeClock(T0 + timedelta(hours=1))
    now_s = int(clock.now().timestamp())
    telemetry, _, _ = services(db, tmp_path, clock)
    add_device(db, "d-1")
    # 4 minutes ahead, within the signing tolerance: stored at the server's times.
    ahead = Batch(1, (gauge(now_s + 240 - 180, 1.0), gauge(now_s + 240 - 120, 2.0)))
    upload(telemetry, db, "d-1", ahead, ahead_s=240)
    # Stamped 10 minutes ahead, sent once the clock was right: bounded by the arrival.
    stamped_ahead = Batch(2, (gauge(now_s + 600 - 60, 3.0),))
    upload(telemetry, db, "d-1", stamped_ahead)
    with db.read() as tx:
        stored = tx.telemetry.windows(["d-1"], ["host.cpu.percent"], 0, 2 * now_s)
    assert [(dw.window.start_s, dw.window.last) for dw in stored] == [
        (now_s - 180, 1.0), (now_s - 120, 2.0), (now_s - 60, 3.0),
    ]  # fmt: skip
    clock_record = telemetry.cursor("d-1").clock
    assert (clock_record.skew_s, clock_record.newest_end_s) == (0, now_s)
    assert (clock_record.shifted_batches, clock_record.shifted_windows) == (2, 3)
    assert (clock_record.last_shift_s, clock_record.largest_shift_s) == (-600, -600)
    assert "600 s after the batch arrived" in (clock_record.last_reason or "")


def latency_batches(
    first_seq: int, first_start_s: int, levels: list[float], seed: int = 1
) -> Iterator[Batch]:
    rng = random.Random(seed)
    for i, level in enumerate(levels):
        values = [level * (1 + 0.05 * rng.random()) for _ in range(20)]
        yield Batch(first_seq + i, (timing(first_start_s + 60 * i, values),))


def test_a_degrading_kpi_opens_an_alert_and_makes_the_device_sample_finer(
    db: Database, tmp_path: Path
) -> None:
    clock = FakeClock(T0 + timedelta(minutes=15))  # after the last window: none in the future
    telemetry, alerts, metrics = services(db, tmp_path, clock)
    telemetry.set_policy(ADMIN, {
        "sets": [{"name": "inference", "prefixes": ["inference."], "window_s": 60}],
        "detection": {"min_baseline": 6, "open_after": 2, "close_after": 2},
    })  # fmt: skip
    device = add_device(db, "d-1")
    generation = device.desired_generation
    levels = [10.0] * 8 + [80.0] * 3 + [10.0] * 3
    batches = list(latency_batches(1, T0_S, levels))
    for batch in batches[:10]:
        upload(telemetry, db, "d-1", batch)
    [alert] = alerts.list_alerts(VIEWER, AlertFilter())
    assert alert.kind is AlertKind.ANOMALY and alert.kpi == "p95_latency_ms"
    assert "p95_latency_ms" in alert.open_reason and alert.metrics == (LATENCY,)
    with db.read() as tx:
        opened = tx.devices.get("d-1")
    assert opened.desired_generation == generation + 1
    assert opened.desired["telemetry"]["anomalous_metrics"] == [LATENCY]
    for batch in batches[10:]:
        upload(telemetry, db, "d-1", batch)
    assert alerts.list_alerts(VIEWER, AlertFilter()) == []
    [closed] = alerts.list_alerts(VIEWER, AlertFilter(include_closed=True))
    assert closed.status is AlertStatus.CLOSED and "back to" in (closed.close_reason or "")
    with db.read() as tx:
        recovered = tx.devices.get("d-1")
    assert recovered.desired["telemetry"]["anomalous_metrics"] == []
    assert recovered.desired_generation == generation + 2
    assert metrics.alerts_opened.value("anomaly") == 1
    assert metrics.alerts_closed.value("anomaly") == 1


@pytest.mark.parametrize("chunk", [1, 2, alerts_service.ANALYSIS_CHUNK_DEVICES])
def test_drift_against_own_baseline_and_against_cohort_peers(
    db: Database, tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The analysis reads the fleet's windows a few devices at a time: whatever the chunk,
    # a device's peers (read in other chunks) are there to compare it with.
    monkeypatch.setattr(alerts_service, "ANALYSIS_CHUNK_DEVICES", chunk)
    clock = FakeClock(T0 + timedelta(hours=2))
    telemetry, alerts, _ = services(db, tmp_path, clock)
    telemetry.set_policy(ADMIN, {
        "sets": [{"name": "inference", "prefixes": ["inference."], "window_s": 60}],
        "detection": {"drift_recent_s": 1800, "drift_baseline_s": 3600, "drift_min_count": 100,
                      "min_cohort_devices": 3},
    })  # fmt: skip
    for name in ("d-1", "d-2", "d-3"):
        add_device(db, name)
    rng = random.Random(7)
    for name in ("d-1", "d-2", "d-3"):
        windows = []
        for minute in range(90):
            start_s = T0_S + 30 * 60 + 60 * minute
            shifted = name == "d-3" and minute >= 60  # d-3 slows down for the last 30 min
            values = [rng.gauss(30.0 if shifted else 10.0, 1.0) for _ in range(10)]
            windows.append(timing(start_s, [max(v, 0.1) for v in values]))
        upload(telemetry, db, name, Batch(1, tuple(windows)))
    assert alerts.analyze() == 1  # one device changed: d-3, the healthy peers are left alone
    found = {a.kind: a for a in alerts.list_alerts(VIEWER, AlertFilter())}
    # Its own detector saw the step at ingest too.
    assert set(found) == {AlertKind.ANOMALY, AlertKind.DRIFT, AlertKind.COHORT}
    assert {a.device_id for a in found.values()} == {"d-3"}
    assert "PSI" in found[AlertKind.DRIFT].open_reason
    assert "2 cohort peers" in found[AlertKind.COHORT].open_reason
    assert alerts.analyze() == 0  # nothing new: no flapping


def test_retention_rolls_raw_windows_into_hours_then_prunes(db: Database, tmp_path: Path) -> None:
    clock = FakeClock(T0 + timedelta(hours=2))  # the uploads arrive after their windows
    telemetry, _, _ = services(
        db, tmp_path, clock, telemetry_raw_retention_days=1, telemetry_rollup_retention_days=3
    )
    add_device(db, "d-1")
    windows = [timing(T0_S + 60 * i, [float(i + 1)]) for i in range(120)]  # two hours
    upload(telemetry, db, "d-1", Batch(1, tuple(windows[:90])))
    upload(telemetry, db, "d-1", Batch(2, tuple(windows[90:])))
    before = telemetry.query(
        VIEWER, LATENCY, T0, T0 + timedelta(hours=2), device="d-1", quantile=0.5, step_s=3600
    )
    clock.at = T0 + timedelta(days=1, minutes=90)  # the first hour and a half are past
    counts = telemetry.roll_up_and_prune()
    assert counts["windows_rolled_up"] == 90 and counts["rollups_written"] == 2
    clock.at = T0 + timedelta(days=1, hours=3)
    assert telemetry.roll_up_and_prune()["windows_rolled_up"] == 30  # merged into hour 2
    with db.read() as tx:
        assert tx.telemetry.batch_window_counts("d-1") == {}
    after = telemetry.query(
        VIEWER, LATENCY, T0, T0 + timedelta(hours=2), device="d-1", quantile=0.5, step_s=3600
    )
    assert [(p.start_s, p.count, p.sum, p.min, p.max, p.quantile)
            for p in after.series[0].points] == [
        (p.start_s, p.count, p.sum, p.min, p.max, p.quantile) for p in before.series[0].points
    ]  # fmt: skip
    clock.at = T0 + timedelta(days=4)
    assert telemetry.roll_up_and_prune()["rollups_pruned"] == 2


def test_queries_and_kpi_summaries(db: Database, tmp_path: Path) -> None:
    clock = FakeClock(T0 + timedelta(hours=1))
    telemetry, _, _ = services(db, tmp_path, clock)
    add_device(db, "d-1")
    add_device(db, "d-2", arch="x86_64")
    for name, level in (("d-1", 10.0), ("d-2", 20.0)):
        windows = [timing(T0_S + 60 * i, [level, level * 2]) for i in range(10)]
        windows += [
            Window(
                "inference.requests",
                MetricKind.COUNTER,
                (),
                T0_S + 60 * i,
                60,
                5,
                50.0,
                10.0,
                10.0,
                10.0,
            )
            for i in range(10)
        ]
        windows += [
            Window("inference.errors", MetricKind.COUNTER, (), T0_S + 60 * i, 60, 1, 1.0,
                   1.0, 1.0, 1.0)
            for i in range(10)
        ]  # fmt: skip
        upload(telemetry, db, name, Batch(1, tuple(windows)))
    result = telemetry.query(
        VIEWER, LATENCY, T0, clock.now(), selector="site=a", quantile=0.95, step_s=300
    )
    assert [s.device_id for s in result.series] == ["d-1", "d-2"]
    assert [p.count for p in result.series[0].points] == [10, 10]
    assert result.summary is not None and result.summary.count == 40
    assert (result.summary.min, result.summary.max) == (10.0, 40.0)
    assert result.summary.mean == pytest.approx(22.5)
    with pytest.raises(InvalidInput):
        telemetry.query(VIEWER, LATENCY, clock.now(), T0, device="d-1")
    summary = telemetry.kpi_summary(["d-1", "d-2"], LATENCY, T0, clock.now())
    assert summary.devices["d-1"].quantile == pytest.approx(20.0, rel=0.01)
    assert set(summary.cohorts) == {"none/aarch64", "none/x86_64"}
    assert summary.kpis["d-1"]["error_rate_pct"].value == pytest.approx(2.0)
    assert summary.kpis["d-1"]["error_rate_pct"].samples == 500
    assert summary.kpis["d-2"]["p95_latency_ms"].value == pytest.approx(40.0, rel=0.01)


def test_hourly_totals_add_up_raw_windows_and_rollups_per_device_and_hour(db: Database) -> None:
    hour = T0_S // 3600 * 3600
    raw = [gauge(hour + 60 * i, 10.0 + i) for i in range(3)] + [gauge(hour + 3600, 50.0)]
    rolled = replace(gauge(hour - 3600, 0.0), length_s=3600, count=60, sum=600.0)
    with db.transaction() as tx:
        tx.telemetry.insert_windows("d-1", 1, raw)
        tx.telemetry.insert_windows("d-2", 1, [gauge(hour, 99.0)])
        tx.telemetry.put_rollup("d-1", rolled, replace_existing=False)
    with db.read() as tx:
        totals = tx.telemetry.hourly_totals(["d-1"], ["host.cpu.percent"], hour - 3600, hour + 7200)
    assert [(t.device_id, t.hour_s, t.sum, t.count, t.covered_s) for t in totals] == [
        ("d-1", hour - 3600, 600.0, 60, 3600),
        ("d-1", hour, 2 * (10.0 + 11.0 + 12.0), 6, 180),
        ("d-1", hour + 3600, 100.0, 2, 60),
    ]
