from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.core.telemetry.anomaly import (
    MAD_TO_STD,
    AlertPhase,
    AnomalyEvent,
    DetectorConfig,
    DetectorKind,
    DetectorState,
    Direction,
    EventKind,
    new_detector,
    step,
)
from edgefleet.errors import InvalidInput

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
KINDS = list(DetectorKind)


def run(
    state: DetectorState, values: list[float]
) -> tuple[DetectorState, list[tuple[int, AnomalyEvent]]]:
    events = []
    for i, value in enumerate(values):
        state, event = step(state, value, T0 + timedelta(minutes=i))
        if event is not None:
            events.append((i, event))
    return state, events


def noise(seed: int, n: int, mean: float = 20.0, sd: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sd) for _ in range(n)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_latency_step_is_detected_within_a_few_windows_and_closes_on_recovery(
    kind: DetectorKind, seed: int
) -> None:
    change_at, recover_at = 200, 260
    values = noise(seed, change_at) + noise(seed + 100, 60, mean=30.0) + noise(seed + 200, 100)
    config = DetectorConfig(kind=kind, direction=Direction.UP)
    _, events = run(new_detector(config), values)
    (opened_at, opened), (closed_at, closed) = events
    assert opened.kind is EventKind.OPENED and closed.kind is EventKind.CLOSED
    assert change_at + config.open_after - 1 <= opened_at <= change_at + config.open_after + 2
    assert recover_at + config.close_after - 1 <= closed_at <= recover_at + config.close_after + 2
    assert opened.at == T0 + timedelta(minutes=opened_at)
    assert "above" in opened.reason and "below" in closed.reason


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_stationary_noise_raises_no_alert(kind: DetectorKind, seed: int) -> None:
    rng = random.Random(seed)
    gaussian = noise(seed, 3000)
    skewed = [rng.lognormvariate(3.0, 0.3) for _ in range(3000)]  # latency-like, long tail
    for values in (gaussian, skewed):
        state, events = run(new_detector(DetectorConfig(kind=kind)), values)
        assert events == []
        assert state.phase is AlertPhase.NORMAL


def trained(config: DetectorConfig) -> DetectorState:
    """A robust detector whose baseline has median 20 and MAD 1 exactly."""
    state, _ = run(new_detector(config), [19.0, 20.0, 21.0] * (config.baseline_windows // 3))
    return state


def at_score(z: float) -> float:
    return 20.0 + z * MAD_TO_STD


def test_hysteresis_keeps_alerts_from_flapping() -> None:
    config = DetectorConfig(open_score=4.0, close_score=2.0, open_after=3, close_after=3)
    state = trained(config)
    # Hovering at the threshold, dipping below it every other window: does not open.
    state, events = run(state, [at_score(z) for z in [5, 3.5] * 4])
    assert events == [] and state.phase is AlertPhase.NORMAL
    state, events = run(state, [at_score(6)] * 3)
    assert [e.kind for _, e in events] == [EventKind.OPENED]
    # Between the thresholds: stays open, quietly.
    state, events = run(state, [at_score(z) for z in [3, 2.5, 3.9, 2.1] * 10])
    assert events == [] and state.phase is AlertPhase.OPEN
    # One calm window is not enough to close either.
    state, events = run(state, [at_score(0), at_score(0), at_score(3), at_score(0), at_score(0)])
    assert events == []
    state, events = run(state, [at_score(0)])
    assert [e.kind for _, e in events] == [EventKind.CLOSED]


def test_the_baseline_does_not_learn_the_incident() -> None:
    state = trained(DetectorConfig())
    history = state.history
    state, _ = run(state, [at_score(10)] * 30)
    assert state.phase is AlertPhase.OPEN
    assert state.history == history
    state, events = run(state, [20.0] * 3)
    assert [e.kind for _, e in events] == [EventKind.CLOSED]


def test_direction_up_ignores_drops() -> None:
    state = trained(DetectorConfig(direction=Direction.UP))
    _, events = run(state, [at_score(-10)] * 10)
    assert events == []
    state = trained(DetectorConfig(direction=Direction.DOWN))
    _, events = run(state, [at_score(-10)] * 10)
    assert [e.kind for _, e in events] == [EventKind.OPENED]


def test_a_flat_baseline_does_not_turn_tiny_changes_into_alerts() -> None:
    state, _ = run(new_detector(), [100.0] * 20)
    _, events = run(state, [100.5] * 10)  # within the 1% spread floor
    assert events == []


def test_warm_up_scores_nothing() -> None:
    state, events = run(new_detector(DetectorConfig(min_baseline=12)), [1.0] * 5 + [1e6] * 5)
    assert events == [] and state.phase is AlertPhase.WARMING_UP
    assert state.last_score is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"open_score": 2.0, "close_score": 2.0},
        {"close_score": 0.0},
        {"open_after": 0},
        {"min_baseline": 1},
        {"baseline_windows": 5, "min_baseline": 10},
        {"ewma_alpha": 1.0},
    ],
)
def test_bad_configs_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        DetectorConfig(**kwargs)  # type: ignore[arg-type]


def test_non_finite_values_are_refused() -> None:
    with pytest.raises(InvalidInput):
        step(new_detector(), float("nan"), T0)
