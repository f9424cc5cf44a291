"""Combining stored windows: rollups, query buckets, summaries, and the exposition format."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.telemetry.rollup import HOUR_S, combine, roll_up
from edgefleet.core.telemetry.series import choose_step_s, metric_windows, series_points, summarize
from edgefleet.core.telemetry.sketch import DDSketch
from edgefleet.core.telemetry.windows import MetricKind, Window
from edgefleet.server.prometheus import MetricFamily, format_value, render

START_S = 1_772_438_400  # on an hour


def timing(start_s: int, values: list[float], tags: tuple = (), length_s: int = 60) -> Window:
    sketch = DDSketch()
    for v in values:
        sketch.add(v)
    return Window(
        "inference.latency_ms",
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


values_st = st.lists(st.floats(0.1, 1000.0), min_size=1, max_size=30)


@given(st.lists(st.tuples(st.integers(0, 300), values_st), min_size=1, max_size=20))
def test_rollups_keep_every_count_and_the_quantiles_of_all_values(
    windows_spec: list[tuple[int, list[float]]],
) -> None:
    windows = [timing(START_S + 60 * i, vs) for i, vs in windows_spec]
    rolled = roll_up(windows)
    everything = [v for _, vs in windows_spec for v in vs]
    assert sum(w.count for w in rolled.values()) == len(everything)
    assert math.isclose(sum(w.sum for w in rolled.values()), sum(everything), rel_tol=1e-9)
    assert all(w.start_s % HOUR_S == 0 for w in rolled.values())
    # Rolling up rollups again (a later run merging into an existing row) changes nothing.
    again = roll_up(rolled.values())
    assert {k: (w.count, w.min, w.max) for k, w in again.items()} == {
        k: (w.count, w.min, w.max) for k, w in rolled.items()
    }
    merged = summarize(windows, 0.95)
    assert merged is not None and merged.quantile is not None
    exact = sorted(everything)[math.floor(0.95 * (len(everything) - 1))]  # the sketch's rank
    assert abs(merged.quantile - exact) <= 0.011 * exact + 1e-9


def test_combine_accepts_overlapping_windows_after_a_graceful_restart() -> None:
    cut = timing(START_S, [5.0, 7.0], length_s=31)  # cut short at shutdown
    fresh = timing(START_S, [9.0], length_s=60)  # the restarted agent's window, same start
    merged = combine([fresh, cut])
    assert (merged.start_s, merged.length_s, merged.count, merged.max) == (START_S, 60, 3, 9.0)
    assert merged.sketch is not None and merged.sketch.count == 3
    gauge = Window("g", MetricKind.GAUGE, (), START_S, 60, 1, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(Exception, match="different series"):
        combine([gauge, cut])


def test_series_buckets_merge_tags_and_read_quantiles() -> None:
    windows = [
        timing(START_S, [10.0] * 10, (("model", "a"),)),
        timing(START_S, [20.0] * 10, (("model", "b"),)),
        timing(START_S + 60, [30.0] * 5),
    ]
    points = series_points(windows, 60, 0.5)
    assert [(p.start_s, p.count, p.windows) for p in points] == [
        (START_S, 20, 2),
        (START_S + 60, 5, 1),
    ]
    assert points[0].mean == 15.0 and points[0].min == 10.0 and points[0].max == 20.0
    assert points[1].quantile == pytest.approx(30.0, rel=0.01)
    per_metric = metric_windows(windows, [0.95])
    assert [(name, w.start_s, w.count) for name, w in per_metric] == [
        ("inference.latency_ms", START_S, 20),
        ("inference.latency_ms", START_S + 60, 5),
    ]
    assert per_metric[0][1].quantiles[0.95] == pytest.approx(20.0, rel=0.01)


def test_step_choice() -> None:
    assert choose_step_s(3600) == 30  # 120 buckets at most
    assert choose_step_s(60) == 1
    assert choose_step_s(3600, 5) == 5  # as asked, within MAX_POINTS buckets
    assert choose_step_s(86400, 5) == 44
    assert choose_step_s(86400 * 30) % 3600 == 0


def test_exposition_format_escapes_and_spells_numbers() -> None:
    family = MetricFamily("x_total", "counter", "Help with a \\ and\na newline.")
    family.add(3.0, {"path": 'a"b\\c\nd'})
    text = render([family])
    assert "# HELP x_total Help with a \\\\ and\\na newline." in text
    assert 'x_total{path="a\\"b\\\\c\\nd"} 3' in text
    assert [format_value(v) for v in (1.0, 0.25, math.inf, -math.inf, math.nan)] == [
        "1",
        "0.25",
        "+Inf",
        "-Inf",
        "NaN",
    ]
    with pytest.raises(Exception, match="rendered twice"):
        render([family, family])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_a_histogram_passes_promtool() -> None:
    hist = MetricFamily("request_duration_seconds", "histogram", "Request time.")
    hist.add_histogram([0.1, 1.0], [3, 5], 2.5, 6, {"route": "/v1/x"})
    up = MetricFamily("things", "gauge", "Things.")
    up.add(2)
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=render([hist, up]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
