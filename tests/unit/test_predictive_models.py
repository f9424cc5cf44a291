"""Forecast nodes for migration destinations, and telemetry fidelity advice applied by the
sampling decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.agent.telemetry.collector import TelemetryCollector
from edgefleet.agent.telemetry.queue import TelemetryQueue
from edgefleet.core.telemetry.fidelity import (
    FidelityAdvice,
    FidelityConfig,
    MetricTrend,
    Threshold,
    advice_from_document,
    advice_to_document,
    advise_fidelity,
    fidelity_to_document,
    merge_advice,
    parse_fidelity,
    trends_from_windows,
)
from edgefleet.core.telemetry.policy import (
    default_fleet_policy,
    fleet_policy_to_document,
    parse_fleet_policy,
    render_telemetry_section,
)
from edgefleet.core.telemetry.sampling import (
    DeviceCondition,
    SamplingMode,
    decide_sampling,
    default_policy,
    read_fidelity_advice,
)
from edgefleet.core.workloads.failover import fit_trend
from edgefleet.core.workloads.forecast import forecast_node
from edgefleet.core.workloads.placement import Assignment, Placement, place
from edgefleet.core.workloads.terms import Node, PowerSource, Topology
from edgefleet.core.workloads.workload import parse_workload
from edgefleet.errors import InvalidInput

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def samples(start: float, per_hour: float, hours: float = 2.0) -> list[tuple[datetime, float]]:
    """A reading every 5 minutes over the last `hours`, changing by `per_hour`."""
    n = int(hours * 12)
    return [
        (NOW - timedelta(minutes=5 * (n - i)), start + per_hour * (i - n) / 12)
        for i in range(n + 1)
    ]


def node(node_id: str, battery: float | None = None) -> Node:
    power = PowerSource.MAINS if battery is None else PowerSource.BATTERY
    return Node(node_id, "r", "z", 2000, 1024, power_source=power, battery_pct=battery)


# --- forecast nodes -------------------------------------------------------------------------


def test_forecast_follows_the_trend_of_the_data() -> None:
    rising = fit_trend(samples(0.5, per_hour=0.2))
    falling = fit_trend(samples(0.5, per_hour=-0.2))
    assert rising is not None and falling is not None
    up = forecast_node(node("a"), {"cpu_load": rising}, NOW, 3600)
    down = forecast_node(node("a"), {"cpu_load": falling}, NOW, 3600)
    assert up.used_cpu_millicores == pytest.approx(1400, abs=40)  # 0.7 of 2000 in an hour
    assert down.used_cpu_millicores == pytest.approx(1000, abs=40)  # the load now: the peak
    drain = fit_trend(samples(30.0, per_hour=-20.0))
    assert drain is not None
    sensor = forecast_node(node("s", battery=30.0), {"battery_pct": drain}, NOW, 3600)
    assert sensor.battery_pct == pytest.approx(10.0, abs=1)
    assert sensor.battery_empty_at is not None
    assert sensor.battery_empty_at - NOW == pytest.approx(
        timedelta(minutes=90), abs=timedelta(minutes=5)
    )
    assert forecast_node(node("a"), {"cpu_load": rising}, NOW, 0) == node("a")
    with pytest.raises(InvalidInput):
        forecast_node(node("a"), {}, NOW, -1)


def test_a_forecast_steers_a_replica_away_from_a_node_about_to_be_busy_or_flat() -> None:
    workload = parse_workload(
        {"kind": "Workload", "metadata": {"name": "agg"},
         "spec": {"resources": {"cpu_millicores": 400, "memory_mb": 64}, "replicas": 1}}
    )  # fmt: skip
    now_values = [
        Node("climbing", "r", "z", 2000, 1024, used_cpu_millicores=600),
        Node("steady", "r", "z", 2000, 1024, used_cpu_millicores=800),
    ]
    current = place([workload], now_values, Topology(), Placement(), NOW).placement
    assert current.assignments[0].node_id == "climbing"  # the lower load now
    trends = {"climbing": fit_trend(samples(0.3, per_hour=0.3)),
              "steady": fit_trend(samples(0.4, per_hour=0.0))}  # fmt: skip
    forecast = [
        forecast_node(n, {"cpu_load": t}, NOW, 3600)
        for n in now_values
        if (t := trends[n.id]) is not None
    ]
    assert (
        place([workload], forecast, Topology(), Placement(), NOW).placement.assignments[0].node_id
        == "steady"
    )


def test_a_forecast_does_not_count_the_placed_replicas_load_twice() -> None:
    """The measured load includes the replicas placed on the node, which the plan counts by
    their requests: the forecast holds only the rest, so a busy replica is not pushed off
    its own node by its own load."""
    busy = fit_trend(samples(0.75, per_hour=0.0))  # 1500m of 2000m, all of it the replica's
    assert busy is not None
    workload = parse_workload(
        {"kind": "Workload", "metadata": {"name": "big"},
         "spec": {"resources": {"cpu_millicores": 1500, "memory_mb": 64}, "replicas": 1}}
    )  # fmt: skip
    current = Placement((Assignment("big", 0, "a", 1),), 1)
    own = forecast_node(node("a"), {"cpu_load": busy}, NOW, 3600, placed_cpu_millicores=1500)
    assert own.used_cpu_millicores == 0
    plan = place([workload], [own, node("b")], Topology(), current, NOW)
    assert plan.placement.assignments[0].node_id == "a"
    twice = forecast_node(node("a"), {"cpu_load": busy}, NOW, 3600)
    assert twice.used_cpu_millicores == 1500  # counted as foreign work: no room left for it
    moved = place([workload], [twice, node("b")], Topology(), current, NOW)
    assert moved.placement.assignments[0].node_id == "b"
    with pytest.raises(InvalidInput):
        forecast_node(node("a"), {}, NOW, 3600, placed_cpu_millicores=-1)


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 1), st.floats(-2, 2), st.floats(0, 100), st.floats(-50, 50))
def test_forecast_nodes_stay_physical(load: float, load_slope: float, battery: float,
                                      drain: float) -> None:  # fmt: skip
    trends = {"cpu_load": fit_trend(samples(load, load_slope)),
              "battery_pct": fit_trend(samples(battery, drain))}  # fmt: skip
    got = forecast_node(
        node("n", battery=battery), {k: v for k, v in trends.items() if v}, NOW, 3600
    )
    assert 0 <= got.used_cpu_millicores <= got.cpu_millicores
    assert got.battery_pct is not None and 0 <= got.battery_pct <= battery


# --- fidelity -------------------------------------------------------------------------------

LATENCY = "inference.latency_ms"
ERRORS = "inference.error_rate_pct"
WATCH = (Threshold(LATENCY, 200.0), Threshold(ERRORS, 5.0))


def test_fidelity_reads_the_values_and_their_trend() -> None:
    calm = advise_fidelity(WATCH, {LATENCY: MetricTrend(60.0), ERRORS: MetricTrend(0.2)})
    assert calm.coarse == {LATENCY, ERRORS} and not calm.fine
    near = advise_fidelity(WATCH, {LATENCY: MetricTrend(185.0), ERRORS: MetricTrend(0.2)})
    assert near.fine == {LATENCY} and near.coarse == {ERRORS}
    assert "within 8% of its threshold (above 200)" in near.reasons[LATENCY]
    heading = advise_fidelity(WATCH, {LATENCY: MetricTrend(120.0, slope_per_s=0.1)})
    assert heading.fine == {LATENCY}  # 120 + 0.1 * 900 = 210: past it within the horizon
    middle = advise_fidelity(WATCH, {LATENCY: MetricTrend(165.0)})
    assert not middle.fine and not middle.coarse
    drifting = advise_fidelity(WATCH, {LATENCY: MetricTrend(60.0)}, drifting={LATENCY})
    assert drifting.fine == {LATENCY} and drifting.reasons[LATENCY] == "drift open"
    below = advise_fidelity(
        (Threshold("battery", 15.0, above=False),), {"battery": MetricTrend(16.0)}
    )
    assert below.fine == {"battery"}
    with pytest.raises(InvalidInput):
        advise_fidelity(WATCH, {}, near_fraction=0.6, far_fraction=0.5)


def test_sampling_follows_the_advice_and_an_anomaly_still_wins() -> None:
    policy = default_policy()
    base = decide_sampling(policy, DeviceCondition())
    fine = decide_sampling(policy, DeviceCondition(fine_metrics=frozenset({LATENCY})))
    coarse = decide_sampling(policy, DeviceCondition(coarse_metrics=frozenset({LATENCY})))
    assert base.window_s_for(LATENCY) == 60
    assert fine.window_s_for(LATENCY) == 15 and fine.upload_interval_s == 60
    assert coarse.window_s_for(LATENCY) == 300 and coarse.window_s_for("host.cpu.percent") == 60
    assert {d.name: d.mode for d in coarse.sets}["inference"] is SamplingMode.COARSE
    both = DeviceCondition(
        coarse_metrics=frozenset({LATENCY}), anomalous_metrics=frozenset({LATENCY})
    )
    assert decide_sampling(policy, both).window_s_for(LATENCY) == 15


def test_the_advice_travels_in_the_desired_state() -> None:
    plain = render_telemetry_section(default_fleet_policy(), ())
    assert "fine_metrics" not in plain and read_fidelity_advice(plain) == (frozenset(), frozenset())
    section = render_telemetry_section(
        default_fleet_policy(),
        (),
        FidelityAdvice(frozenset({LATENCY}), frozenset({"host.cpu.percent"})),
    )
    assert read_fidelity_advice(section) == (frozenset({LATENCY}), frozenset({"host.cpu.percent"}))
    with pytest.raises(InvalidInput, match="fine_metrics"):
        read_fidelity_advice({**section, "fine_metrics": "all"})


def test_the_agent_collector_samples_as_advised(tmp_path: Path) -> None:
    collector = TelemetryCollector(TelemetryQueue(tmp_path / "q.db"))
    section = render_telemetry_section(
        default_fleet_policy(), (), FidelityAdvice(frozenset({LATENCY}), frozenset())
    )
    assert collector.apply_section(section, NOW)
    assert collector.decision.window_s_for(LATENCY) == 15
    assert collector.apply_section(render_telemetry_section(default_fleet_policy(), ()), NOW)
    assert collector.decision.window_s_for(LATENCY) == 60


def test_the_fleet_policy_declares_fidelity_thresholds() -> None:
    assert parse_fidelity(None) == FidelityConfig()
    config = parse_fidelity(
        {"thresholds": [{"metric": LATENCY, "above": 200}, {"metric": "battery", "below": 20}],
         "near": 0.05, "far": 0.3, "horizon": 600}
    )  # fmt: skip
    assert config.thresholds == (Threshold(LATENCY, 200.0), Threshold("battery", 20.0, False))
    assert parse_fidelity(fidelity_to_document(config)) == config
    document = fleet_policy_to_document(default_fleet_policy())
    assert document["fidelity"]["enabled"] and not document["fidelity"]["thresholds"]
    policy = parse_fleet_policy({**document, "fidelity": fidelity_to_document(config)})
    assert policy.fidelity == config
    for raw, key in (
        ({"thresholds": [{"metric": LATENCY}]}, "thresholds[0]"),
        ({"thresholds": [{"metric": LATENCY, "above": 1, "below": 2}]}, "thresholds[0]"),
        ({"near": 0.5, "far": 0.2}, "near"),
        ({"horizon": -1}, "horizon"),
        ({"enabled": "yes"}, "enabled"),
        ({"thresholds": [], "sometimes": 1}, "sometimes"),
    ):
        with pytest.raises(InvalidInput, match=f"fidelity.{key}".replace("[", r"\[")):
            parse_fidelity(raw)


def test_trends_come_from_the_batch_and_absent_metrics_keep_their_advice() -> None:
    from edgefleet.core.telemetry.windows import MetricKind, Window

    windows = [
        Window(LATENCY, MetricKind.TIMING, (), 60 * i, 60, 2, 2 * v, v, v, v)
        for i, v in enumerate([100.0, 120.0, 140.0])
    ]
    trend = trends_from_windows(windows, {LATENCY, ERRORS})
    assert set(trend) == {LATENCY}
    assert trend[LATENCY].level == pytest.approx(140.0)
    assert trend[LATENCY].slope_per_s == pytest.approx(20.0 / 60)
    before = FidelityAdvice(frozenset({ERRORS}), frozenset({LATENCY}), {ERRORS: "near"})
    judged = advise_fidelity(WATCH, trend)
    merged = merge_advice(before, judged, trend.keys())
    assert merged.fine == {ERRORS, LATENCY} and not merged.coarse  # latency climbs: fine now
    assert advice_from_document(advice_to_document(merged)) == merged
    assert advice_from_document({"fine": "x"}) == FidelityAdvice()
