"""Drift detection: has a KPI's distribution moved away from its baseline?

Both distributions come as sketches (anything with `count`, `quantile(q)` and `cdf(x)`, such
as a DDSketch merged over the baseline period and over the recent period). Two measures:

- the population stability index over the baseline's deciles: PSI = sum (c - b) ln(c / b)
  where b and c are the shares of baseline and current values in each bin. By the usual
  reading, below 0.1 is stable, 0.1..0.25 a moderate shift, above 0.25 a significant one;
- quantile shifts: the relative change of chosen quantiles (median, p90, p99), which says
  *how* it moved ("p99 +38%") where PSI only says *that* it moved.

The verdict is the worse of the two, with a reason naming what crossed which threshold.
Too few values on either side gives INSUFFICIENT_DATA rather than a guess.

>>> class Uniform:
...     def __init__(self, low, high, count=1000):
...         self.low, self.high, self.count = low, high, count
...     def quantile(self, q): return self.low + q * (self.high - self.low)
...     def cdf(self, x): return min(1.0, max(0.0, (x - self.low) / (self.high - self.low)))
>>> detect_drift(Uniform(0, 10), Uniform(0, 10)).status
<DriftStatus.STABLE: 'stable'>
>>> detect_drift(Uniform(0, 10), Uniform(3, 13)).status
<DriftStatus.DRIFT: 'drift'>
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from edgefleet.errors import InvalidInput

# Bins with no values still get this share, so one empty bin does not make PSI infinite.
PSI_EPSILON = 1e-4


class Distribution(Protocol):
    @property
    def count(self) -> int: ...

    def quantile(self, q: float) -> float: ...

    def cdf(self, x: float) -> float: ...


class DriftStatus(StrEnum):
    INSUFFICIENT_DATA = "insufficient_data"
    STABLE = "stable"
    WARNING = "warning"
    DRIFT = "drift"


_SEVERITY = {
    DriftStatus.INSUFFICIENT_DATA: 0,
    DriftStatus.STABLE: 1,
    DriftStatus.WARNING: 2,
    DriftStatus.DRIFT: 3,
}


@dataclass(frozen=True)
class DriftThresholds:
    psi_warning: float = 0.1
    psi_drift: float = 0.25
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)
    shift_warning: float = 0.1  # relative change of a quantile, 0.1 = 10%
    shift_drift: float = 0.25
    bins: int = 10
    min_count: int = 200

    def __post_init__(self) -> None:
        if not 0 < self.psi_warning <= self.psi_drift:
            raise InvalidInput("drift needs 0 < psi_warning <= psi_drift", code="bad_drift")
        if not 0 < self.shift_warning <= self.shift_drift:
            raise InvalidInput("drift needs 0 < shift_warning <= shift_drift", code="bad_drift")
        if self.bins < 2 or not all(0 < q < 1 for q in self.quantiles):
            raise InvalidInput("drift needs >= 2 bins and quantiles in (0, 1)", code="bad_drift")


@dataclass(frozen=True)
class QuantileShift:
    q: float
    baseline: float
    current: float
    relative: float  # (current - baseline) / |baseline|; absolute when the baseline is 0


@dataclass(frozen=True)
class DriftResult:
    status: DriftStatus
    psi: float | None
    shifts: tuple[QuantileShift, ...]
    reason: str


def population_stability_index(
    baseline: Distribution, current: Distribution, bins: int = 10
) -> float:
    """PSI of `current` against `baseline` over the baseline's `bins` quantile bins."""
    edges = sorted({baseline.quantile(i / bins) for i in range(1, bins)})
    base_cdf = [0.0, *(baseline.cdf(e) for e in edges), 1.0]
    cur_cdf = [0.0, *(current.cdf(e) for e in edges), 1.0]
    psi = 0.0
    for i in range(len(edges) + 1):
        b = max(base_cdf[i + 1] - base_cdf[i], PSI_EPSILON)
        c = max(cur_cdf[i + 1] - cur_cdf[i], PSI_EPSILON)
        psi += (c - b) * math.log(c / b)
    return psi


def quantile_shifts(
    baseline: Distribution, current: Distribution, quantiles: tuple[float, ...]
) -> tuple[QuantileShift, ...]:
    """The relative change of each quantile from `baseline` to `current`."""
    shifts = []
    for q in quantiles:
        b, c = baseline.quantile(q), current.quantile(q)
        relative = (c - b) / abs(b) if b != 0 else c - b
        shifts.append(QuantileShift(q, b, c, relative))
    return tuple(shifts)


def _grade(value: float, warning: float, drift: float) -> DriftStatus:
    if value >= drift:
        return DriftStatus.DRIFT
    if value >= warning:
        return DriftStatus.WARNING
    return DriftStatus.STABLE


def detect_drift(
    baseline: Distribution, current: Distribution, thresholds: DriftThresholds | None = None
) -> DriftResult:
    """STABLE / WARNING / DRIFT (or INSUFFICIENT_DATA) for `current` against `baseline`."""
    t = thresholds or DriftThresholds()
    if baseline.count < t.min_count or current.count < t.min_count:
        return DriftResult(
            DriftStatus.INSUFFICIENT_DATA,
            None,
            (),
            f"need {t.min_count} values on each side, have {baseline.count} baseline "
            f"and {current.count} current",
        )
    psi = population_stability_index(baseline, current, t.bins)
    shifts = quantile_shifts(baseline, current, t.quantiles)
    status = _grade(psi, t.psi_warning, t.psi_drift)
    reasons = [f"PSI {psi:.3f}"] if status is not DriftStatus.STABLE else []
    for shift in shifts:
        graded = _grade(abs(shift.relative), t.shift_warning, t.shift_drift)
        if graded is not DriftStatus.STABLE:
            reasons.append(f"p{shift.q * 100:g} {shift.relative:+.0%}")
        if _SEVERITY[graded] > _SEVERITY[status]:
            status = graded
    if status is DriftStatus.STABLE:
        reason = f"PSI {psi:.3f} and quantile shifts within thresholds"
    else:
        reason = ", ".join(reasons)
    return DriftResult(status, psi, shifts, reason)
