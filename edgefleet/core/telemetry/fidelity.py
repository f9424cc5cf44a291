"""Telemetry fidelity: sample finer where a decision is close, coarser where none is.

A metric matters to the control plane through its thresholds (an alert's, a gate's, a
drain's). Where its value sits far from every threshold and is not heading for one,
coarser windows change no decision and save bytes and battery; where it sits near one,
or drifts towards it, finer windows let the decision come sooner. `advise_fidelity` sorts
each watched metric of a device into *fine*, *base* or *coarse* from its recent trend:

    fine    the level, or its forecast over `horizon_s`, is within `near_fraction` of the
            threshold (relative to the threshold), or drift is open on the metric
    coarse  both are further than `far_fraction` away, and no drift is open
    base    in between

The advice travels in the device's desired state next to `anomalous_metrics`
(`core.telemetry.policy`), and `core.telemetry.sampling` applies it: fine metrics are
sampled as an open anomaly is (/ `anomaly_divisor`), coarse ones x `relaxed_factor`.

>>> watch = (Threshold("inference.latency_ms", 200.0),)
>>> advise_fidelity(watch, {"inference.latency_ms": MetricTrend(190.0, 0.0)}).fine
frozenset({'inference.latency_ms'})
>>> advise_fidelity(watch, {"inference.latency_ms": MetricTrend(40.0, 0.0)}).coarse
frozenset({'inference.latency_ms'})
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from edgefleet.errors import InvalidInput

DEFAULT_NEAR_FRACTION = 0.15
DEFAULT_FAR_FRACTION = 0.5
DEFAULT_HORIZON_S = 900.0


@dataclass(frozen=True)
class Threshold:
    """A value of `metric` at which a decision changes; `above`: trouble above it."""

    metric: str
    value: float
    above: bool = True


@dataclass(frozen=True)
class MetricTrend:
    """A metric's smoothed level and its slope per second (Holt, EWMA or a fit)."""

    level: float
    slope_per_s: float = 0.0


@dataclass(frozen=True)
class FidelityAdvice:
    fine: frozenset[str] = frozenset()
    coarse: frozenset[str] = frozenset()
    reasons: Mapping[str, str] = field(default_factory=dict)


def _distance(threshold: Threshold, value: float) -> float:
    """How far `value` is from trouble, as a fraction of the threshold (<= 0: past it)."""
    scale = abs(threshold.value) or 1.0
    gap = threshold.value - value if threshold.above else value - threshold.value
    return gap / scale


def advise_fidelity(
    thresholds: Sequence[Threshold],
    trends: Mapping[str, MetricTrend],
    drifting: Collection[str] = (),
    *,
    near_fraction: float = DEFAULT_NEAR_FRACTION,
    far_fraction: float = DEFAULT_FAR_FRACTION,
    horizon_s: float = DEFAULT_HORIZON_S,
) -> FidelityAdvice:
    """Which of a device's watched metrics to sample finer or coarser, with reasons."""
    if not 0 <= near_fraction <= far_fraction:
        raise InvalidInput("fidelity: need 0 <= near_fraction <= far_fraction")
    fine: set[str] = set()
    coarse: set[str] = set()
    reasons: dict[str, str] = {}
    by_metric: dict[str, list[Threshold]] = {}
    for t in thresholds:
        by_metric.setdefault(t.metric, []).append(t)
    for metric in sorted(by_metric):
        if metric in drifting:
            fine.add(metric)
            reasons[metric] = "drift open"
            continue
        trend = trends.get(metric)
        if trend is None:
            continue
        ahead = trend.level + trend.slope_per_s * horizon_s
        closest = min(
            (min(_distance(t, trend.level), _distance(t, ahead)), t) for t in by_metric[metric]
        )  # fmt: skip
        distance, t = closest
        side = "above" if t.above else "below"
        if distance <= near_fraction:
            fine.add(metric)
            reasons[metric] = (
                f"within {max(distance, 0.0):.0%} of its threshold ({side} {t.value:g})"
            )
        elif distance > far_fraction:
            coarse.add(metric)
            reasons[metric] = f"{distance:.0%} from its threshold ({side} {t.value:g})"
    return FidelityAdvice(frozenset(fine), frozenset(coarse), reasons)
