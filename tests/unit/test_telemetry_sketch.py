from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.telemetry.sketch import MIN_INDEXABLE, DDSketch
from edgefleet.errors import InvalidInput

ALPHA = 0.01
QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0)

values_st = st.lists(
    st.one_of(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
        st.floats(min_value=1e-6, max_value=1e9),
        st.just(0.0),
    ),
    min_size=1,
    max_size=300,
)


def sketch_of(values: list[float], alpha: float = ALPHA, max_buckets: int = 2048) -> DDSketch:
    sketch = DDSketch(alpha, max_buckets)
    for v in values:
        sketch.add(v)
    return sketch


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_within_alpha(estimate: float, exact: float) -> None:
    # Relative accuracy, plus the zero bucket's absolute width and float rounding at edges.
    assert abs(estimate - exact) <= ALPHA * abs(exact) * (1 + 1e-9) + MIN_INDEXABLE


@settings(max_examples=150)
@given(values_st)
def test_every_quantile_is_within_alpha_of_the_value_at_that_rank(values: list[float]) -> None:
    sketch = sketch_of(values)
    for q in QUANTILES:
        assert_within_alpha(sketch.quantile(q), exact_quantile(values, q))


@given(values_st)
def test_count_sum_min_max_are_exact(values: list[float]) -> None:
    sketch = sketch_of(values)
    assert sketch.count == len(values)
    assert sketch.min == min(values)
    assert sketch.max == max(values)
    assert sketch.sum == pytest.approx(math.fsum(values), rel=1e-9, abs=1e-6)


@settings(max_examples=100)
@given(values_st, values_st)
def test_merging_two_sketches_equals_sketching_all_values(a: list[float], b: list[float]) -> None:
    merged = sketch_of(a)
    merged.merge(sketch_of(b))
    whole = sketch_of(a + b)
    assert merged.buckets() == whole.buckets()
    assert (merged.count, merged.zero_count, merged.min, merged.max) == (
        whole.count,
        whole.zero_count,
        whole.min,
        whole.max,
    )
    for q in QUANTILES:
        assert merged.quantile(q) == whole.quantile(q)


@given(values_st, values_st)
def test_merge_is_commutative(a: list[float], b: list[float]) -> None:
    ab, ba = sketch_of(a), sketch_of(b)
    ab.merge(sketch_of(b))
    ba.merge(sketch_of(a))
    assert ab.buckets() == ba.buckets()
    assert ab.count == ba.count


@given(values_st)
def test_serialization_round_trips(values: list[float]) -> None:
    sketch = sketch_of(values)
    assert DDSketch.from_wire(sketch.to_wire()) == sketch
    rebuilt = DDSketch.from_bins(
        ALPHA, sketch.bins_to_wire(), total=sketch.sum, min_value=sketch.min, max_value=sketch.max
    )
    assert rebuilt == sketch


def test_weighted_add_counts_a_value_several_times() -> None:
    weighted, repeated = DDSketch(), DDSketch()
    weighted.add(12.5, count=10)
    for _ in range(10):
        repeated.add(12.5)
    assert weighted == repeated


def test_bucket_count_stays_bounded_and_upper_quantiles_stay_accurate() -> None:
    rng = random.Random(3)
    values = [10 ** rng.uniform(-6, 9) for _ in range(5000)]
    sketch = DDSketch(ALPHA, max_buckets=128)
    for v in values:
        sketch.add(v)
    positive, negative = sketch.buckets()
    assert len(positive) <= 128 and not negative
    assert sketch.count == len(values)
    # 128 buckets of 2% cover the top factor of 13 of the values: the top 7% here.
    for q in (0.99, 0.999, 1.0):
        assert_within_alpha(sketch.quantile(q), exact_quantile(values, q))
    # The collapsed low end only loses accuracy, never values.
    assert sketch.quantile(0.0) == min(values)


def test_negative_store_collapses_the_most_negative_values() -> None:
    values = [-float(i) for i in range(2, 200)] + [-1.0] * 1000
    sketch = sketch_of(values, max_buckets=16)
    _, negative = sketch.buckets()
    assert len(negative) <= 16
    assert sketch.count == len(values)
    # The values nearest zero are the highest ones: they keep their accuracy.
    for q in (0.5, 0.9, 1.0):
        assert_within_alpha(sketch.quantile(q), exact_quantile(values, q))
    assert sketch.quantile(0.0) == -199.0


def test_latencies_at_zero_go_to_the_zero_bucket() -> None:
    sketch = sketch_of([0.0, 0.0, 5.0])
    assert sketch.zero_count == 2
    assert sketch.quantile(0.5) == 0.0


def test_cdf_counts_values_at_or_below() -> None:
    sketch = sketch_of([float(v) for v in range(1, 101)])
    assert sketch.cdf(0.5) == 0.0
    assert sketch.cdf(1000.0) == 1.0
    assert sketch.cdf(50.0) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (lambda s: s.quantile(0.5), "empty_sketch"),
        (lambda s: s.add(math.nan), "bad_value"),
        (lambda s: s.add(math.inf), "bad_value"),
        (lambda s: s.add(1.0, count=-1), "bad_value"),
        (lambda s: s.quantile(1.5), "bad_quantile"),
        (lambda s: s.merge(DDSketch(0.02)), "sketch_mismatch"),
    ],
)
def test_misuse_raises_invalid_input(action: object, code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        action(DDSketch())  # type: ignore[operator]
    assert err.value.code == code


@pytest.mark.parametrize(
    "bins",
    [
        "nope",
        [0, 1],
        [-1, 0, []],
        [0, 0, [1, -2]],
        [0, 0, [True]],
        [0, 0, [1.5]],
        [0, "x", [1]],
        [0, 1 << 30, [1]],
        [0, 0, [1] * 5000],
        [0, 0, [1], 3],
    ],
)
def test_malformed_bins_are_refused(bins: object) -> None:
    with pytest.raises(InvalidInput) as err:
        DDSketch.from_bins(ALPHA, bins, total=1.0, min_value=1.0, max_value=1.0)
    assert err.value.code == "bad_sketch"


def test_stats_that_contradict_each_other_are_refused() -> None:
    bins = sketch_of([1.0, 2.0]).bins_to_wire()
    with pytest.raises(InvalidInput):
        DDSketch.from_bins(ALPHA, bins, total=3.0, min_value=2.0, max_value=1.0)
    with pytest.raises(InvalidInput):
        DDSketch.from_bins(ALPHA, bins, total=math.inf, min_value=1.0, max_value=2.0)


def test_far_apart_values_keep_the_serialized_form_bounded() -> None:
    sketch = sketch_of([1.0, 1.7e298, 2.0], max_buckets=64)
    _, _, counts = sketch.bins_to_wire()
    assert len(counts) <= 64
    assert DDSketch.from_wire(sketch.to_wire()) == sketch
    assert sketch.quantile(1.0) == 1.7e298


def test_sketch_size_is_limited_to_what_the_wire_accepts() -> None:
    with pytest.raises(InvalidInput):
        DDSketch(ALPHA, max_buckets=1_000_000)
