from __future__ import annotations

import random

import pytest

from edgefleet.core.telemetry.drift import (
    DriftStatus,
    DriftThresholds,
    detect_drift,
    population_stability_index,
)
from edgefleet.core.telemetry.sketch import DDSketch
from edgefleet.errors import InvalidInput


def sketch(values: list[float]) -> DDSketch:
    s = DDSketch()
    for v in values:
        s.add(v)
    return s


def latencies(
    seed: int, n: int = 5000, median_ms: float = 24.0, sigma: float = 0.35
) -> list[float]:
    rng = random.Random(seed)
    return [median_ms * rng.lognormvariate(0, sigma) for _ in range(n)]


def scores(seed: int, n: int = 5000, a: float = 8, b: float = 2) -> list[float]:
    rng = random.Random(seed)
    return [rng.betavariate(a, b) for _ in range(n)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_samples_of_the_same_distribution_are_stable(seed: int) -> None:
    for make in (latencies, scores):
        result = detect_drift(sketch(make(seed)), sketch(make(seed + 50)))
        assert result.status is DriftStatus.STABLE, result.reason
        assert result.psi is not None and result.psi < 0.05


def test_a_latency_shift_is_drift_and_the_reason_says_where() -> None:
    result = detect_drift(sketch(latencies(1)), sketch(latencies(2, median_ms=32.0)))
    assert result.status is DriftStatus.DRIFT
    assert result.psi is not None and result.psi > 0.25
    median = next(s for s in result.shifts if s.q == 0.5)
    assert median.relative == pytest.approx(1 / 3, abs=0.05)
    assert "p50 +3" in result.reason


def test_a_modest_shift_is_a_warning() -> None:
    result = detect_drift(sketch(latencies(1)), sketch(latencies(2, median_ms=27.0)))
    assert result.status is DriftStatus.WARNING, result.reason


def test_a_wider_spread_with_the_same_median_is_caught_in_the_tail() -> None:
    result = detect_drift(sketch(latencies(1)), sketch(latencies(2, sigma=0.7)))
    assert result.status is DriftStatus.DRIFT
    assert "p99" in result.reason


def test_model_output_drift_is_caught() -> None:
    # The model grows less confident: its score distribution moves down.
    result = detect_drift(sketch(scores(1)), sketch(scores(2, a=5, b=3)))
    assert result.status is DriftStatus.DRIFT


def test_too_few_values_give_no_verdict() -> None:
    result = detect_drift(sketch(latencies(1, n=100)), sketch(latencies(2)))
    assert result.status is DriftStatus.INSUFFICIENT_DATA
    assert result.psi is None
    assert "need 200" in result.reason


def test_psi_of_a_sketch_against_itself_is_zero() -> None:
    s = sketch(latencies(4))
    assert population_stability_index(s, s) == 0.0


def test_psi_handles_a_distribution_concentrated_in_one_bucket() -> None:
    constant = sketch([5.0] * 1000)
    moved = sketch([50.0] * 1000)
    assert population_stability_index(constant, constant) == 0.0
    assert population_stability_index(constant, moved) > 1.0


def test_merged_window_sketches_form_the_baseline() -> None:
    values = latencies(9, n=6000)
    windows = [sketch(values[i : i + 120]) for i in range(0, 6000, 120)]
    baseline = DDSketch()
    for w in windows[:25]:
        baseline.merge(w)
    recent = DDSketch()
    for w in windows[25:]:
        recent.merge(w)
    assert detect_drift(baseline, recent).status is DriftStatus.STABLE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"psi_warning": 0.3, "psi_drift": 0.2},
        {"shift_warning": 0},
        {"bins": 1},
        {"quantiles": (0.5, 1.0)},
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        DriftThresholds(**kwargs)  # type: ignore[arg-type]
