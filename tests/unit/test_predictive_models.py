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
    MetricTrend,
    Threshold,
    advise_fidelity,
)
from edgefleet.core.telemetry.policy import default_fleet_policy, render_telemetry_section
from edgefleet.core.telemetry.sampling import (
    DeviceCondition,
    SamplingMode,
    decide_sampling,
    default_policy,
    read_fidelity_advice,
)
from edgefleet.core.workloads.failover import fit_trend
from edgefleet.core.workloads.forecast import forecast_node
from edgefleet.core.workloads.placement import Placement, place
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
    middle = advise_fidelity(WATCH, {LATENCY: MetricTrend(130.0)})
    assert not middle.fine and not middle.coarse
    drifting = advise_fidelity(WATCH, {LATENCY: MetricTrend(60.0)}, drifting={LATENCY})
    assert drifting.fine == {LATENCY} and drifting.reasons[LATENCY] == "drift open"
    below = advise_fidelity(
        (Threshold("battery", 15.0, above=False),), {"battery": MetricTrend(17.0)}
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
    assert fine.window_s_for(LATENCY) == 15 and fine.upload_interval_s == base.upload_interval_s
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
