"""Placing a device's windows on the control plane's clock: a wrong clock is undone, no
window lands in the future, a batch never lands before the device's previous one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.telemetry.clock import (
    MIN_SKEW_S,
    ClockRecord,
    Correction,
    place_batch,
    record_placement,
)

ARRIVAL_S = 1_796_000_000
ARRIVAL = datetime.fromtimestamp(ARRIVAL_S, UTC) + timedelta(milliseconds=400)


@pytest.mark.parametrize(
    ("newest_end_s", "signed_at_s", "previous_end_s", "shift_s", "corrections"),
    [
        # A clock in step: kept, whatever a little latency does to the timestamp.
        (ARRIVAL_S - 20, ARRIVAL_S, None, 0, ()),
        (ARRIVAL_S - 20, ARRIVAL_S - 3, ARRIVAL_S - 80, 0, ()),
        # 4 minutes ahead (within the signing tolerance): the skew is undone.
        (ARRIVAL_S + 240 - 20, ARRIVAL_S + 240, None, -240, (Correction.SKEW,)),
        # 4 minutes behind.
        (ARRIVAL_S - 240 - 20, ARRIVAL_S - 240, None, 240, (Correction.SKEW,)),
        # Measured 10 minutes ahead, sent after the clock was set right: bounded by arrival.
        (ARRIVAL_S + 600 - 100, ARRIVAL_S, None, -500, (Correction.FUTURE,)),
        # Measured 5 minutes behind, sent after the clock was set right: after the previous.
        (ARRIVAL_S - 300, ARRIVAL_S, ARRIVAL_S - 60, 240, (Correction.ORDER,)),
        # Behind when sent, but the correction would put it in the future: the bound wins.
        (ARRIVAL_S - 30, ARRIVAL_S - 200, None, 30, (Correction.SKEW, Correction.FUTURE)),
    ],
)
def test_placements(
    newest_end_s: int,
    signed_at_s: int,
    previous_end_s: int | None,
    shift_s: int,
    corrections: tuple[Correction, ...],
) -> None:
    placement = place_batch(newest_end_s, signed_at_s, ARRIVAL, previous_end_s)
    assert (placement.shift_s, placement.corrections) == (shift_s, corrections)
    assert placement.newest_end_s == newest_end_s + shift_s
    assert placement.skew_s == signed_at_s - ARRIVAL_S
    assert placement.reason.startswith(f"moved {shift_s:+d} s" if shift_s else "kept")


def test_reasons_say_what_was_wrong() -> None:
    ahead = place_batch(ARRIVAL_S + 200, ARRIVAL_S + 240, ARRIVAL, None)
    assert ahead.reason == (
        "moved -240 s: the device's clock was 240 s ahead when it sent the batch"
    )
    future = place_batch(ARRIVAL_S + 500, ARRIVAL_S, ARRIVAL, None)
    assert "ended 500 s after the batch arrived" in future.reason
    order = place_batch(ARRIVAL_S - 300, ARRIVAL_S, ARRIVAL, ARRIVAL_S - 60)
    assert "240 s before the device's previous batch" in order.reason
    assert place_batch(ARRIVAL_S - 5, ARRIVAL_S - 2, ARRIVAL, None).reason == (
        "kept as stamped (clock 2 s behind)"
    )


def test_a_batch_without_windows_only_shows_the_skew() -> None:
    placement = place_batch(None, ARRIVAL_S + 240, ARRIVAL, ARRIVAL_S - 60)
    assert (placement.skew_s, placement.newest_end_s) == (240, None)
    record = record_placement(ClockRecord(newest_end_s=ARRIVAL_S - 60), placement, 0)
    assert record == ClockRecord(skew_s=240, newest_end_s=ARRIVAL_S - 60)


def test_the_record_counts_moved_batches_and_keeps_the_largest_move() -> None:
    record = ClockRecord()
    for newest_end_s, signed_at_s, windows in [
        (ARRIVAL_S + 200, ARRIVAL_S + 240, 12),  # -240
        (ARRIVAL_S + 500, ARRIVAL_S, 5),  # -500
        (ARRIVAL_S - 10, ARRIVAL_S - 100, 7),  # +10 (skew +100, then the bound)
        (ARRIVAL_S, ARRIVAL_S, 3),  # kept: ends as the previous one, at arrival
    ]:
        placement = place_batch(newest_end_s, signed_at_s, ARRIVAL, record.newest_end_s)
        record = record_placement(record, placement, windows)
    assert (record.shifted_batches, record.shifted_windows) == (3, 24)
    assert (record.last_shift_s, record.largest_shift_s, record.skew_s) == (10, -500, 0)
    assert record.newest_end_s == ARRIVAL_S  # the newest stored end never goes back
    assert record.last_reason is not None and record.last_reason.startswith("moved +10 s")


offsets = st.integers(min_value=-100_000, max_value=100_000)


@given(
    newest_end_offset_s=offsets,
    skew_s=st.integers(min_value=-300, max_value=300),
    previous_end_offset_s=st.none() | st.integers(min_value=-100_000, max_value=0),
    arrival_ms=st.integers(min_value=0, max_value=999),
)
def test_never_in_the_future_and_never_before_the_previous_batch(
    newest_end_offset_s: int, skew_s: int, previous_end_offset_s: int | None, arrival_ms: int
) -> None:
    arrival = datetime.fromtimestamp(ARRIVAL_S, UTC) + timedelta(milliseconds=arrival_ms)
    previous_end_s = None if previous_end_offset_s is None else ARRIVAL_S + previous_end_offset_s
    placement = place_batch(
        ARRIVAL_S + newest_end_offset_s, ARRIVAL_S + skew_s, arrival, previous_end_s
    )
    end_s = ARRIVAL_S + newest_end_offset_s + placement.shift_s
    assert placement.newest_end_s == end_s
    assert end_s <= arrival.timestamp()
    if previous_end_s is not None:
        assert end_s >= previous_end_s
    assert (placement.shift_s == 0) == (placement.reason.startswith("kept"))


@given(
    ahead_s=st.integers(min_value=-300, max_value=300),
    age_s=st.integers(min_value=0, max_value=3600),
    since_previous_s=st.integers(min_value=0, max_value=3600),
)
def test_a_steady_wrong_clock_is_undone_exactly(
    ahead_s: int, age_s: int, since_previous_s: int
) -> None:
    """Windows that ended `age_s` before the upload, from a clock `ahead_s` off all along
    (within the signing tolerance), land at their true server times."""
    true_end_s = ARRIVAL_S - age_s
    previous_end_s = true_end_s - since_previous_s
    placement = place_batch(true_end_s + ahead_s, ARRIVAL_S + ahead_s, ARRIVAL, previous_end_s)
    if abs(ahead_s) >= MIN_SKEW_S:
        assert placement.newest_end_s == true_end_s
    else:  # clock noise: kept, but never before the previous batch or in the future
        assert placement.newest_end_s == min(max(true_end_s + ahead_s, previous_end_s), ARRIVAL_S)
