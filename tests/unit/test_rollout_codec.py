"""The JSON forms of rollouts and device records round-trip exactly (Hypothesis), survive a
real JSON encoder, and refuse what they cannot read."""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.rollouts.actions import apply_decision
from edgefleet.core.rollouts.codec import (
    device_from_json,
    device_to_json,
    rollout_from_json,
    rollout_to_json,
    time_from_json,
    time_to_json,
)
from edgefleet.core.rollouts.decision import decide
from edgefleet.core.rollouts.gates import GateResult, GateVerdict
from edgefleet.core.rollouts.rollout import (
    DeviceState,
    GateEvaluation,
    Rollout,
    RolloutDevice,
    RolloutState,
)
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.rollouts.waves import Wave, WavePlan
from edgefleet.errors import InvalidInput

SPEC = parse_rollout_spec({"release": "det@2.0.0", "strategy": {"waves": [1, "50%"]}})
DEVICE_IDS = st.text("abcdef0123456789-", min_size=1, max_size=12)

times = st.builds(
    lambda t, offset_min: t.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=offset_min))),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(-12 * 60, 14 * 60),
)
numbers = st.floats(allow_nan=False)  # inf and -inf included; NaN never equals itself


@st.composite
def plans(draw: st.DrawFn) -> WavePlan:
    ids = draw(st.lists(DEVICE_IDS, unique=True, max_size=12))
    cuts = sorted(draw(st.lists(st.integers(0, len(ids)), max_size=4)))
    bounds = [0, *cuts, len(ids)]
    waves: list[Wave] = []
    for start, end in itertools.pairwise(bounds):
        if end > start:
            label = draw(st.sampled_from(["1", "5%", "rest", "100%"]))
            soak = draw(st.floats(0, 86400))
            waves.append(Wave(len(waves), label, tuple(ids[start:end]), soak))
    return WavePlan("ro-1", tuple(waves))


results = st.builds(
    GateResult,
    gate=st.sampled_from(["install_failure_rate", "workload_error_rate", "kpi:p95_latency_ms"]),
    verdict=st.sampled_from(list(GateVerdict)),
    measured=st.none() | numbers,
    threshold=numbers,
    unit=st.sampled_from(["%", ""]),
    devices=st.integers(0, 10**6),
    samples=st.integers(0, 10**12),
    reason=st.text(),
)
evaluations = st.builds(
    GateEvaluation,
    wave=st.integers(0, 99),
    at=times,
    verdict=st.sampled_from(list(GateVerdict)),
    results=st.lists(results, max_size=3).map(tuple),
    reason=st.text(),
)
rollouts = st.builds(
    Rollout,
    id=st.just("ro-1"),
    spec=st.just(SPEC),
    state=st.sampled_from(list(RolloutState)),
    reason=st.text(),
    plan=st.none() | plans(),
    wave=st.integers(0, 99),
    started_at=st.none() | times,
    soak_until=st.none() | times,
    gate_wait_until=st.none() | times,
    rollback_started_at=st.none() | times,
    recent_assignments=st.lists(times, max_size=5).map(tuple),
    gate_evaluations=st.lists(evaluations, max_size=4).map(tuple),
)
devices = st.builds(
    RolloutDevice,
    device_id=DEVICE_IDS,
    state=st.sampled_from(list(DeviceState)),
    attempts=st.integers(0, 100),
    assigned_at=st.none() | times,
    retry_at=st.none() | times,
    previous_release=st.none() | st.sampled_from(["det@1.0.0", "other@0.1.0-rc.1"]),
    reason=st.text(),
)


@given(rollouts)
def test_a_rollout_round_trips_through_json(rollout: Rollout) -> None:
    stored = json.loads(json.dumps(rollout_to_json(rollout), allow_nan=False))
    assert rollout_from_json(rollout.id, SPEC, stored) == rollout


@given(devices)
def test_a_device_record_round_trips_with_its_stored_fields(device: RolloutDevice) -> None:
    stored = json.loads(json.dumps(device_to_json(device), allow_nan=False))
    assert device_from_json(stored) == device


def test_observed_fields_are_not_stored() -> None:
    device = RolloutDevice("d-1", healthy=False, time_zone="Europe/Berlin",
                           current_release="det@1.0.0")  # fmt: skip
    assert device_from_json(device_to_json(device)) == RolloutDevice("d-1")


def test_non_finite_measurements_are_kept_as_text() -> None:
    result = GateResult("kpi:x", GateVerdict.FAIL, math.inf, 20.0, "%", 2, 40, "unbounded")
    evaluation = GateEvaluation(0, datetime(2026, 1, 1, tzinfo=UTC), GateVerdict.FAIL,
                                (result,), "gate failed")  # fmt: skip
    rollout = Rollout("ro-1", SPEC, gate_evaluations=(evaluation,))
    text = json.dumps(rollout_to_json(rollout), allow_nan=False)
    assert '"inf"' in text
    assert rollout_from_json("ro-1", SPEC, json.loads(text)) == rollout


def test_a_rollout_the_engine_moved_round_trips() -> None:
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    devices = {f"d{i}": RolloutDevice(f"d{i}", current_release="det@1.0.0") for i in range(4)}
    decision = decide(Rollout("ro-1", SPEC), devices, {}, now)
    rollout, _ = apply_decision(Rollout("ro-1", SPEC), devices, decision)
    assert rollout.plan is not None and rollout.recent_assignments
    assert rollout_from_json("ro-1", SPEC, rollout_to_json(rollout)) == rollout


def test_times_are_utc_with_microseconds() -> None:
    berlin = datetime(2026, 3, 29, 3, 30, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert time_to_json(berlin) == "2026-03-29T01:30:00.000005+00:00"
    assert time_from_json(time_to_json(berlin)) == berlin
    with pytest.raises(InvalidInput):
        time_to_json(datetime(2026, 1, 1))
    with pytest.raises(InvalidInput):
        time_from_json("2026-01-01T00:00:00")
    with pytest.raises(InvalidInput):
        time_from_json("yesterday")


def test_an_unknown_codec_version_is_refused() -> None:
    stored = rollout_to_json(Rollout("ro-1", SPEC))
    with pytest.raises(InvalidInput, match="codec"):
        rollout_from_json("ro-1", SPEC, {**stored, "codec": 99})
