"""The phi-accrual failure detector: its statistics, its monotonicity, and its defaults on a
clean link (a stopped node is declared dead within 3-5 s) and on a lossy one (no false
'dead' in a long seeded run)."""

from __future__ import annotations

import math
import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.workloads.failure_detector import (
    DEFAULT_SETTINGS,
    DEFAULT_THRESHOLDS,
    DetectorSettings,
    HeartbeatHistory,
    Liveness,
    Thresholds,
    classify,
    interval_stats,
    new_history,
    phi,
    record_heartbeat,
    seconds_until,
)
from edgefleet.errors import InvalidInput

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def history(
    arrivals_s: list[float], settings: DetectorSettings = DEFAULT_SETTINGS
) -> HeartbeatHistory:
    state = new_history()
    for s in arrivals_s:
        state = record_heartbeat(state, at(s), settings)
    return state


def test_a_device_never_heard_from_is_not_suspected() -> None:
    assert phi(new_history(), T0) == 0.0
    assert classify(0.0) is Liveness.ALIVE
    assert seconds_until(new_history(), 8, T0) is None


def test_regular_heartbeats_then_silence_go_alive_suspect_dead() -> None:
    state = history([float(i) for i in range(30)])
    assert classify(phi(state, at(29.9))) is Liveness.ALIVE
    states = [classify(phi(state, at(29 + s / 10))) for s in range(0, 200)]
    first_suspect = states.index(Liveness.SUSPECT)
    first_dead = states.index(Liveness.DEAD)
    assert 0 < first_suspect < first_dead
    assert all(s is Liveness.DEAD for s in states[first_dead:])


@settings(max_examples=50)
@given(st.lists(st.floats(0.2, 5.0), min_size=3, max_size=60), st.floats(0, 30), st.floats(0, 30))
def test_phi_never_falls_while_the_silence_goes_on(
    intervals: list[float], a: float, b: float
) -> None:
    arrivals = [sum(intervals[: i + 1]) for i in range(len(intervals))]
    state = history(arrivals)
    last = arrivals[-1]
    early, late = sorted((a, b))
    assert phi(state, at(last + early)) <= phi(state, at(last + late))


@settings(max_examples=50)
@given(st.lists(st.integers(1_000, 10_000_000), min_size=2, max_size=300))
def test_running_sums_match_the_window_exactly(intervals_us: list[int]) -> None:
    settings_ = DetectorSettings(window_size=50)
    state = new_history()
    t = T0
    state = record_heartbeat(state, t, settings_)
    for us in intervals_us:
        t += timedelta(microseconds=us)
        state = record_heartbeat(state, t, settings_)
    window = intervals_us[-50:]
    assert state.intervals_us == tuple(window)
    assert state.sum_us == sum(window) and state.sum_sq_us2 == sum(x * x for x in window)
    mean_s, std_s = interval_stats(state, settings_)
    assert mean_s == pytest.approx(statistics.fmean(window) / 1e6 + settings_.acceptable_pause_s)
    assert std_s == pytest.approx(max(statistics.pstdev(window) / 1e6, settings_.min_std_s))


def test_late_and_duplicate_heartbeats_change_nothing() -> None:
    state = history([0.0, 1.0, 2.0])
    assert record_heartbeat(state, at(2.0)) == state
    assert record_heartbeat(state, at(1.5)) == state


def test_phi_is_finite_far_into_the_tail() -> None:
    state = history([0.0, 1.0, 2.0, 3.0])
    value = phi(state, at(10_000))
    assert math.isfinite(value) and value > 1000


def test_seconds_until_predicts_the_crossing() -> None:
    state = history([float(i) for i in range(20)])
    wait = seconds_until(state, DEFAULT_THRESHOLDS.dead_phi, at(19))
    assert wait is not None
    assert classify(phi(state, at(19 + wait + 0.01))) is Liveness.DEAD
    assert classify(phi(state, at(19 + wait - 0.01))) is not Liveness.DEAD


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(InvalidInput):
        Thresholds(suspect_phi=10, dead_phi=5)


def simulate(
    *, beats: int, loss: float, seed: int, stop_at: int | None = None
) -> tuple[int, float | None]:
    """Heartbeats every 1 s with sender jitter and exponential network delay, some lost.

    Returns the number of false 'dead' verdicts while the node was alive (phi checked just
    before each arrival, where it peaks) and, if the node stops, the seconds from the stop
    to its being declared dead.
    """
    rng = random.Random(seed)
    arrivals = sorted(
        k + rng.uniform(-0.02, 0.02) + 0.01 + rng.expovariate(1 / 0.05)
        for k in range(beats if stop_at is None else stop_at)
        if rng.random() >= loss
    )
    state, false_dead = new_history(), 0
    for arrival in arrivals:
        now = at(arrival)
        if len(state.intervals_us) >= 10 and classify(phi(state, now)) is Liveness.DEAD:
            false_dead += 1
        state = record_heartbeat(state, now)
    if stop_at is None:
        return false_dead, None
    wait = seconds_until(state, DEFAULT_THRESHOLDS.dead_phi, at(arrivals[-1]))
    assert wait is not None
    return false_dead, arrivals[-1] + wait - (stop_at - 0.5)


def test_a_stopped_node_on_a_clean_link_is_dead_within_3_to_5_seconds() -> None:
    detections = [simulate(beats=0, loss=0.0, seed=s, stop_at=120)[1] for s in range(30)]
    assert all(d is not None and 3.0 <= d <= 5.0 for d in detections)


def test_ten_percent_loss_with_jitter_raises_no_false_dead_in_a_long_run() -> None:
    false_dead, _ = simulate(beats=60_000, loss=0.10, seed=7)
    assert false_dead == 0


def test_on_a_lossy_link_a_stopped_node_is_still_declared_dead() -> None:
    detections = [simulate(beats=0, loss=0.10, seed=s, stop_at=300)[1] for s in range(20)]
    assert all(d is not None and d <= 10.0 for d in detections)
    assert statistics.median(d for d in detections if d is not None) > 4.0  # it waited longer
