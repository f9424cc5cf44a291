"""Placing a device's telemetry windows on the control plane's clock.

A device stamps its windows with its own clock, and edge devices often run with a wrong one
(no RTC battery, no NTP yet after boot). The control plane sees each batch's request
timestamp (signed, so the device's clock when it sent the batch) and knows when the batch
arrived. Every batch is moved by one shift, the same for all its windows (so they keep
their lengths, overlaps and order), chosen in three steps:

1. **skew**: the device's clock minus the server's at arrival. At `MIN_SKEW_S` or more it
   is taken for a wrong clock and undone (less is request latency and the timestamp's
   whole seconds);
2. **order**: the batch's newest window may not end before the newest window of the
   device's previous batch (windows measured while the clock was behind, uploaded after
   it was set right, would otherwise land before windows already stored);
3. **future**: no window may end after the batch arrived (windows measured while the
   clock was ahead, uploaded after it was set right: the request carries no skew, yet the
   windows lie in the future). This bound wins over the order step.

    >>> from datetime import UTC, datetime
    >>> arrival = datetime.fromtimestamp(10_000, UTC)
    >>> place_batch(10_240, 10_240, arrival, None).shift_s  # clock 4 min ahead
    -240
    >>> place_batch(10_500, 10_000, arrival, None).shift_s  # ahead earlier, set right since
    -500
    >>> place_batch(9_900, 10_000, arrival, 9_960).shift_s  # behind earlier, set right since
    60

The shift only moves windows in time: they are stored under (device, sequence, position),
so a moved window can never collide with one already stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

MIN_SKEW_S = 10


class Correction(StrEnum):
    SKEW = "skew"  # the device's clock was off when it sent the batch
    ORDER = "order"  # would have ended before the device's previous batch
    FUTURE = "future"  # would have ended after the batch arrived


@dataclass(frozen=True)
class Placement:
    """How far to move one batch's windows (server time = device time + `shift_s`)."""

    shift_s: int
    skew_s: int  # the device's clock minus the server's: positive when it is ahead
    corrections: tuple[Correction, ...]
    newest_end_s: int | None  # the batch's newest window end after the shift
    reason: str


@dataclass(frozen=True)
class ClockRecord:
    """What the control plane knows about one device's clock and what it corrected."""

    skew_s: int | None = None  # at the last stored batch
    newest_end_s: int | None = None  # the newest window end stored, in server time
    shifted_batches: int = 0
    shifted_windows: int = 0
    last_shift_s: int = 0
    largest_shift_s: int = 0  # the largest shift in magnitude, with its sign
    last_reason: str | None = None  # why the last moved batch was moved


def _ahead_or_behind(seconds: int) -> str:
    return f"{abs(seconds)} s {'ahead' if seconds > 0 else 'behind'}"


def place_batch(
    newest_end_s: int | None, signed_at_s: int, arrival: datetime, previous_end_s: int | None
) -> Placement:
    """Where a batch goes: its newest window end (device clock, None for no windows), the
    request's signed timestamp, when it arrived, and the newest window end stored for the
    device before it (server clock, None for none)."""
    arrival_s = math.floor(arrival.timestamp())
    skew_s = signed_at_s - arrival_s
    shift_s = 0
    corrections: list[Correction] = []
    parts: list[str] = []
    if abs(skew_s) >= MIN_SKEW_S:
        shift_s = -skew_s
        corrections.append(Correction.SKEW)
        parts.append(f"the device's clock was {_ahead_or_behind(skew_s)} when it sent the batch")
    if newest_end_s is None:
        end_s = None
    else:
        end_s = newest_end_s + shift_s
        if previous_end_s is not None and end_s < previous_end_s:
            corrections.append(Correction.ORDER)
            parts.append(
                f"its newest window would have ended {previous_end_s - end_s} s before "
                "the device's previous batch (measured while its clock was behind)"
            )
            end_s = previous_end_s
        if end_s > arrival_s:
            corrections.append(Correction.FUTURE)
            parts.append(
                f"its newest window would have ended {end_s - arrival_s} s after the "
                "batch arrived (measured while the device's clock was ahead)"
            )
            end_s = arrival_s
        shift_s = end_s - newest_end_s
    if shift_s == 0:
        return Placement(0, skew_s, (), end_s,
                         f"kept as stamped (clock {_ahead_or_behind(skew_s)})"
                         if skew_s else "kept as stamped")  # fmt: skip
    reason = f"moved {shift_s:+d} s: " + "; ".join(parts)
    return Placement(shift_s, skew_s, tuple(corrections), end_s, reason)


def record_placement(record: ClockRecord, placement: Placement, windows: int) -> ClockRecord:
    """The device's clock record after storing a batch of `windows` windows placed so."""
    ends = (record.newest_end_s, placement.newest_end_s)
    newest_end_s = max((end for end in ends if end is not None), default=None)
    observed = replace(record, skew_s=placement.skew_s, newest_end_s=newest_end_s)
    if placement.shift_s == 0 or windows == 0:
        return observed
    largest = record.largest_shift_s
    if abs(placement.shift_s) > abs(largest):
        largest = placement.shift_s
    return replace(
        observed,
        shifted_batches=record.shifted_batches + 1,
        shifted_windows=record.shifted_windows + windows,
        last_shift_s=placement.shift_s,
        largest_shift_s=largest,
        last_reason=placement.reason,
    )
