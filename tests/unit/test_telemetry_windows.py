from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.telemetry.windows import (
    Aggregator,
    MetricKind,
    MetricPoint,
    RejectReason,
    Window,
    merge_windows,
    normalize_tags,
)
from edgefleet.errors import InvalidInput

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # on a whole hour
T0_S = int(T0.timestamp())


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def gauge(name: str, value: float, **tags: str) -> MetricPoint:
    return MetricPoint(name, MetricKind.GAUGE, value, normalize_tags(tags))


def test_a_window_holds_count_sum_min_max_last() -> None:
    agg = Aggregator(lambda _: 60)
    for i, value in enumerate([3.0, 9.0, 1.0, 4.0]):
        agg.add(gauge("host.cpu.percent", value), at(5 + i * 10))
    assert agg.close_due(at(59.9)) == []
    [window] = agg.close_due(at(60))
    assert (window.start_s, window.length_s) == (T0_S, 60)
    assert (window.count, window.sum, window.min, window.max, window.last) == (4, 17, 1, 9, 4)
    assert window.kind is MetricKind.GAUGE and window.sketch is None
    assert agg.close_due(at(61)) == []  # handed out once


def test_windows_align_to_multiples_of_their_length() -> None:
    agg = Aggregator(lambda _: 300)
    agg.add(gauge("g", 1), at(3600 + 437))
    [window] = agg.close_all(at(7200))
    assert window.start_s == T0_S + 3600 + 300
    assert window.length_s == 300


def test_a_point_after_the_end_closes_the_window_and_opens_the_next() -> None:
    agg = Aggregator(lambda _: 10)
    agg.add(gauge("g", 1), at(1))
    agg.add(gauge("g", 2), at(25))
    [first] = agg.close_due(at(25))
    assert (first.start_s - T0_S, first.count) == (0, 1)
    [second] = agg.close_due(at(30))
    assert (second.start_s - T0_S, second.last) == (20, 2)


def test_timings_carry_a_sketch_and_counters_sum_increments() -> None:
    agg = Aggregator(lambda _: 60)
    tags = normalize_tags({"model": "v3"})
    for ms in [10.0, 20.0, 30.0, 40.0]:
        agg.add(MetricPoint("inference.latency_ms", MetricKind.TIMING, ms, tags), at(1))
    agg.add(MetricPoint("inference.requests", MetricKind.COUNTER, 1, tags), at(2))
    agg.add(MetricPoint("inference.requests", MetricKind.COUNTER, 10, tags, weight=1), at(3))
    agg.add(MetricPoint("inference.latency_ms", MetricKind.TIMING, 50.0, tags, weight=6), at(4))
    windows = {w.name: w for w in agg.close_due(at(60))}
    timing = windows["inference.latency_ms"]
    assert timing.sketch is not None and timing.sketch.count == timing.count == 10
    assert timing.sketch.quantile(0.9) == pytest.approx(50.0, rel=0.01)
    assert windows["inference.requests"].sum == 11
    assert windows["inference.requests"].tags == (("model", "v3"),)


def test_sums_of_short_decimals_are_exact() -> None:
    agg = Aggregator(lambda _: 60)
    for _ in range(10):
        agg.add(gauge("g", 0.1), at(1))
    [window] = agg.close_due(at(60))
    assert sum([0.1] * 10) != 1.0  # what naive float summation gives
    assert window.sum == 1.0


def test_tags_make_separate_series() -> None:
    agg = Aggregator(lambda _: 60)
    agg.add(gauge("g", 1, model="a"), at(1))
    agg.add(gauge("g", 2, model="b"), at(1))
    windows = agg.close_due(at(60))
    assert sorted(w.tags for w in windows) == [(("model", "a"),), (("model", "b"),)]


def test_refused_points_are_counted_by_reason() -> None:
    agg = Aggregator(lambda name: None if name.startswith("off.") else 60, max_series=2)
    agg.add(gauge("off.metric", 1), at(1))
    agg.add(gauge("a", math.nan), at(1))
    agg.add(gauge("a", 1), at(1))
    agg.add(MetricPoint("a", MetricKind.COUNTER, 1), at(1))
    agg.add(gauge("b", 1), at(1))
    agg.add(gauge("c", 1), at(1))
    assert agg.rejected == {
        RejectReason.INACTIVE: 1,
        RejectReason.BAD_VALUE: 1,
        RejectReason.KIND_CONFLICT: 1,
        RejectReason.SERIES_LIMIT: 1,
    }
    assert agg.accepted == 2


def test_a_length_change_applies_from_the_next_window_without_overlap() -> None:
    lengths = {"g": 60}
    agg = Aggregator(lambda name: lengths[name])
    agg.add(gauge("g", 1), at(30))
    lengths["g"] = 300
    agg.add(gauge("g", 2), at(61))  # closes [0, 60); the 300 s window would start at 0
    agg.add(gauge("g", 3), at(400))
    first, second = agg.close_due(at(400))
    assert (first.start_s - T0_S, first.end_s - T0_S) == (0, 60)
    assert (second.start_s - T0_S, second.end_s - T0_S) == (60, 300)
    [third] = agg.close_due(at(600))
    assert (third.start_s - T0_S, third.length_s) == (300, 300)


def test_a_clock_stepping_back_never_yields_overlapping_windows() -> None:
    agg = Aggregator(lambda _: 60)
    agg.add(gauge("g", 1), at(100))
    agg.add(gauge("g", 2), at(130))  # closes [60, 120)
    agg.add(gauge("g", 3), at(10))  # NTP stepped the clock back: still the open window
    agg.add(gauge("g", 4), at(250))
    windows = agg.close_due(at(300))
    agg.add(gauge("g", 5), at(20))  # back again, with no window open
    windows += agg.close_all(at(400))
    spans = [(w.start_s - T0_S, w.end_s - T0_S) for w in windows]
    assert spans == [(60, 120), (120, 180), (240, 300), (300, 360)]
    assert all(w.length_s > 0 for w in windows)


def test_close_all_cuts_open_windows_short() -> None:
    agg = Aggregator(lambda _: 60)
    agg.add(gauge("g", 1), at(5))
    [window] = agg.close_all(at(20.5))
    assert (window.start_s - T0_S, window.length_s) == (0, 21)


def test_bad_window_lengths_are_refused() -> None:
    agg = Aggregator(lambda _: 0)
    with pytest.raises(InvalidInput):
        agg.add(gauge("g", 1), at(1))


def test_merge_windows_combines_adjacent_windows() -> None:
    agg = Aggregator(lambda _: 60)
    for second, value in [(1, 5.0), (61, 1.0), (62, 7.0)]:
        agg.add(MetricPoint("t", MetricKind.TIMING, value), at(second))
    first, second_window = agg.close_all(at(120))
    merged = merge_windows(first, second_window)
    assert (merged.start_s - T0_S, merged.length_s, merged.count) == (0, 120, 3)
    assert (merged.min, merged.max, merged.last, merged.sum) == (1.0, 7.0, 7.0, 13.0)
    assert merged.sketch is not None and merged.sketch.count == 3
    with pytest.raises(InvalidInput):
        merge_windows(second_window, first)


points_st = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=900),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(list(MetricKind)),
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    ),
    max_size=200,
)


@settings(max_examples=100)
@given(points_st, st.sampled_from([10, 60, 300]))
def test_every_accepted_point_lands_in_exactly_one_window(
    points: list[tuple[float, str, MetricKind, float]], window_s: int
) -> None:
    agg = Aggregator(lambda _: window_s)
    windows: list[Window] = []
    accepted: dict[str, list[float]] = {}
    for second, name, kind, value in sorted(points):
        before = agg.accepted
        agg.add(MetricPoint(name, kind, value), at(second))
        if agg.accepted > before:
            accepted.setdefault(name, []).append(value)
        windows += agg.close_due(at(second))
    windows += agg.close_all(at(1000))
    for name, values in accepted.items():
        mine = sorted((w for w in windows if w.name == name), key=lambda w: w.start_s)
        assert sum(w.count for w in mine) == len(values)
        assert math.fsum(w.sum for w in mine) == pytest.approx(math.fsum(values), abs=1e-3)
        assert min(w.min for w in mine) == min(values)
        assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(mine))
        assert all(w.start_s % window_s == 0 for w in mine)
