from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.telemetry.sampling import (
    WINDOW_LADDER_S,
    DeviceCondition,
    MetricSet,
    SamplingMode,
    TelemetryPolicy,
    decide_sampling,
    default_policy,
    policy_from_document,
    policy_to_document,
    snap_window_s,
)
from edgefleet.errors import InvalidInput

LATENCY = "inference.latency_ms"


def windows(condition: DeviceCondition, policy: TelemetryPolicy | None = None) -> dict[str, int]:
    decision = decide_sampling(policy or default_policy(), condition)
    return {d.name: d.window_s for d in decision.sets}


def test_a_healthy_device_on_mains_uses_the_base_policy() -> None:
    decision = decide_sampling(default_policy(), DeviceCondition(cpu_percent=20.0))
    assert {d.name: (d.window_s, d.mode) for d in decision.sets} == {
        "host": (60, SamplingMode.BASE),
        "inference": (60, SamplingMode.BASE),
    }
    assert decision.upload_interval_s == 300
    assert "base policy" in decision.reason


def test_battery_and_load_make_windows_coarser() -> None:
    assert windows(DeviceCondition(on_battery=True, battery_percent=80)) == {
        "host": 120,
        "inference": 120,
    }
    assert windows(DeviceCondition(on_battery=True, battery_percent=15))["host"] == 300
    assert windows(DeviceCondition(cpu_percent=95.0))["host"] == 120
    decision = decide_sampling(default_policy(), DeviceCondition(on_battery=True, cpu_percent=99))
    assert decision.sets[0].mode is SamplingMode.COARSE
    assert "on battery" in decision.reason and "cpu 99%" in decision.reason
    assert decision.upload_interval_s == 600


def test_an_open_anomaly_makes_its_set_finer_and_uploads_sooner() -> None:
    condition = DeviceCondition(
        cpu_percent=95.0, on_battery=True, anomalous_metrics=frozenset({LATENCY})
    )
    decision = decide_sampling(default_policy(), condition)
    sets = {d.name: d for d in decision.sets}
    assert (sets["inference"].window_s, sets["inference"].mode) == (15, SamplingMode.FINE)
    assert LATENCY in sets["inference"].reason
    assert sets["host"].mode is SamplingMode.COARSE  # the other set is not affected
    assert decision.upload_interval_s == 60
    assert decision.window_s_for(LATENCY) == 15


def test_a_critical_battery_wins_over_an_anomaly() -> None:
    condition = DeviceCondition(
        on_battery=True, battery_percent=5, anomalous_metrics=frozenset({LATENCY})
    )
    decision = decide_sampling(default_policy(), condition)
    inference = next(d for d in decision.sets if d.name == "inference")
    assert inference.mode is SamplingMode.COARSE
    assert "battery critical" in inference.reason


def test_only_active_sets_report_and_the_longest_prefix_wins() -> None:
    policy = TelemetryPolicy(
        sets=(
            MetricSet("inference", ("inference.",), 60),
            MetricSet("latency", ("inference.latency",), 10),
            MetricSet("gpu", ("gpu.",), 30),
        ),
        active_sets=frozenset({"inference", "latency"}),
    )
    decision = decide_sampling(policy, DeviceCondition())
    assert decision.window_s_for("inference.latency_ms") == 10
    assert decision.window_s_for("inference.requests") == 60
    assert decision.window_s_for("gpu.util") is None
    assert decision.window_s_for("host.cpu.percent") is None


def test_windows_are_clamped_to_the_policy_limits() -> None:
    policy = TelemetryPolicy(
        sets=(MetricSet("fast", ("f.",), 20), MetricSet("slow", ("s.",), 600)),
        active_sets=frozenset({"fast", "slow"}),
        min_window_s=10,
        max_window_s=900,
    )
    fine = DeviceCondition(anomalous_metrics=frozenset({"f.x"}))
    assert windows(fine, policy)["fast"] == 10  # 20 / 4 = 5, raised to the 10 s minimum
    coarse = DeviceCondition(on_battery=True, battery_percent=12, cpu_percent=99)
    assert windows(coarse, policy)["slow"] == 900


def test_snapping_keeps_windows_on_the_ladder() -> None:
    assert snap_window_s(59.9) == 30
    assert snap_window_s(60) == 60
    assert snap_window_s(0.2) == 1
    assert snap_window_s(100_000) == 3600
    assert all(3600 % step == 0 for step in WINDOW_LADDER_S)


conditions_st = st.builds(
    DeviceCondition,
    cpu_percent=st.none() | st.floats(min_value=0, max_value=100),
    on_battery=st.booleans(),
    battery_percent=st.none() | st.floats(min_value=0, max_value=100),
    anomalous_metrics=st.frozensets(st.sampled_from([LATENCY, "host.cpu.percent", "other.x"])),
)


@given(conditions_st)
def test_every_decision_is_on_the_ladder_within_limits_and_deterministic(
    condition: DeviceCondition,
) -> None:
    policy = default_policy()
    decision = decide_sampling(policy, condition)
    assert decision == decide_sampling(policy, condition)
    for d in decision.sets:
        assert d.window_s in WINDOW_LADDER_S
        assert policy.min_window_s <= d.window_s <= policy.max_window_s
        assert (d.mode is SamplingMode.FINE) == (d.window_s < 60)
        assert d.reason
    if not condition.anomalous_metrics and not condition.on_battery:
        assert decision.upload_interval_s == policy.upload_interval_s


def test_the_policy_document_round_trips() -> None:
    policy = default_policy()
    assert policy_from_document(policy_to_document(policy)) == policy


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"sets": []}, "sets"),
        ({"sets": [{"name": "a", "prefixes": ["a."], "window_s": 7}]}, "sets[0].window_s"),
        ({"sets": [{"name": "", "prefixes": ["a."], "window_s": 60}]}, "sets[0].name"),
        ({"sets": [{"name": "a", "prefixes": [""], "window_s": 60}]}, "sets[0].prefixes"),
        ({"active_sets": ["nope"]}, "active_sets"),
        ({"upload_interval_s": 0}, "upload_interval_s"),
        ({"load_factor": 1.5}, "load_factor"),
        ({"load_cpu_percent": True}, "load_cpu_percent"),
        ({"min_window_s": 1000}, "min_window_s"),
    ],
)
def test_bad_policy_documents_name_the_key(change: dict[str, Any], key: str) -> None:
    document = {**policy_to_document(default_policy()), **change}
    with pytest.raises(InvalidInput) as err:
        policy_from_document(document)
    assert err.value.code == "bad_policy"
    assert key in err.value.message
