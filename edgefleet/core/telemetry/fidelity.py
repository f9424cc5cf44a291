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

The thresholds come from the fleet telemetry policy's `fidelity` section::

    fidelity:
      enabled: true                  # the default
      thresholds:                    # none by default: nothing changes until one is declared
        - {metric: inference.latency_ms, above: 250}
        - {metric: host.battery.percent, below: 25}
      near: 0.1                      # near_fraction
      far: 0.25                      # far_fraction
      horizon: 900                   # seconds the trend looks ahead

The control plane judges each stored batch: a metric's trend is the least-squares line
through its windows' means in the batch (`trends_from_windows`); a metric absent from the
batch keeps its last advice (`merge_advice`).

>>> watch = (Threshold("inference.latency_ms", 200.0),)
>>> advise_fidelity(watch, {"inference.latency_ms": MetricTrend(190.0, 0.0)}).fine
frozenset({'inference.latency_ms'})
>>> advise_fidelity(watch, {"inference.latency_ms": MetricTrend(40.0, 0.0)}).coarse
frozenset({'inference.latency_ms'})
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgefleet.core.telemetry.windows import Window
from edgefleet.errors import InvalidInput

DEFAULT_NEAR_FRACTION = 0.1
DEFAULT_FAR_FRACTION = 0.25
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


@dataclass(frozen=True)
class FidelityConfig:
    enabled: bool = True
    thresholds: tuple[Threshold, ...] = ()
    near_fraction: float = DEFAULT_NEAR_FRACTION
    far_fraction: float = DEFAULT_FAR_FRACTION
    horizon_s: float = DEFAULT_HORIZON_S

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(t.metric for t in self.thresholds)


def _bad(key: str, expected: str) -> InvalidInput:
    return InvalidInput(f"telemetry policy fidelity.{key}: expected {expected}", code="bad_policy")


def _fraction(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _bad(key, "a number in 0..1")
    return float(value)


def parse_fidelity(raw: object) -> FidelityConfig:
    """The policy's `fidelity` section (None: the defaults); InvalidInput names the key."""
    if raw is None:
        return FidelityConfig()
    if not isinstance(raw, Mapping):
        raise _bad("", "an object")
    unknown = sorted(set(raw) - {"enabled", "thresholds", "near", "far", "horizon"})
    if unknown:
        raise _bad(unknown[0], "one of enabled, thresholds, near, far, horizon")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _bad("enabled", "true or false")
    items = raw.get("thresholds", [])
    if not isinstance(items, list):
        raise _bad("thresholds", "a list")
    thresholds = []
    for i, item in enumerate(items):
        where = f"thresholds[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"metric", "above", "below"}:
            raise _bad(where, "{metric: NAME, above: VALUE} or {metric: NAME, below: VALUE}")
        metric = item.get("metric")
        if not isinstance(metric, str) or not metric:
            raise _bad(f"{where}.metric", "a metric name")
        if ("above" in item) == ("below" in item):
            raise _bad(where, "exactly one of above or below")
        value = item.get("above", item.get("below"))
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise _bad(where, "a number for above or below")
        thresholds.append(Threshold(metric, float(value), above="above" in item))
    horizon = raw.get("horizon", DEFAULT_HORIZON_S)
    if (
        isinstance(horizon, bool)
        or not isinstance(horizon, int | float)
        or not 0 <= horizon <= 86400
    ):
        raise _bad("horizon", "seconds in 0..86400")
    config = FidelityConfig(
        enabled,
        tuple(thresholds),
        _fraction(raw.get("near", DEFAULT_NEAR_FRACTION), "near"),
        _fraction(raw.get("far", DEFAULT_FAR_FRACTION), "far"),
        float(horizon),
    )
    if config.near_fraction > config.far_fraction:
        raise _bad("near", "at most far")
    return config


def fidelity_to_document(config: FidelityConfig) -> dict[str, Any]:
    return {
        "enabled": config.enabled,
        "thresholds": [
            {"metric": t.metric, ("above" if t.above else "below"): t.value}
            for t in config.thresholds
        ],
        "near": config.near_fraction,
        "far": config.far_fraction,
        "horizon": config.horizon_s,
    }


def trends_from_windows(
    windows: Iterable[Window], metrics: Collection[str]
) -> dict[str, MetricTrend]:
    """Per metric of `metrics`, the least-squares line through its windows' means (by window
    end), as a level at the last window and a slope; one window gives a flat trend.

    >>> from edgefleet.core.telemetry.windows import MetricKind
    >>> ws = [Window("m", MetricKind.GAUGE, (), 60 * i, 60, 1, 10.0 + i, 0, 0, 0) for i in range(3)]
    >>> trends_from_windows(ws, {"m"})["m"]
    MetricTrend(level=12.0, slope_per_s=0.016666666666666666)
    """
    points: dict[str, list[tuple[float, float]]] = {}
    for w in windows:
        if w.name in metrics and w.count:
            points.setdefault(w.name, []).append((float(w.end_s), w.sum / w.count))
    trends = {}
    for metric, series in points.items():
        n = len(series)
        mean_t = sum(t for t, _ in series) / n
        mean_v = sum(v for _, v in series) / n
        var_t = sum((t - mean_t) ** 2 for t, _ in series)
        slope = sum((t - mean_t) * (v - mean_v) for t, v in series) / var_t if var_t > 0 else 0.0
        last_t = max(t for t, _ in series)
        trends[metric] = MetricTrend(mean_v + slope * (last_t - mean_t), slope)
    return trends


def merge_advice(
    previous: FidelityAdvice, new: FidelityAdvice, seen: Collection[str]
) -> FidelityAdvice:
    """`new` for the metrics in `seen`, `previous` for the others (no data: no change)."""
    keep = [m for m in (previous.fine | previous.coarse) if m not in seen]
    fine = frozenset(new.fine | {m for m in keep if m in previous.fine})
    coarse = frozenset(new.coarse | {m for m in keep if m in previous.coarse})
    reasons = {**{m: previous.reasons.get(m, "") for m in keep}, **new.reasons}
    return FidelityAdvice(fine, coarse, reasons)


def advice_to_document(advice: FidelityAdvice) -> dict[str, Any]:
    return {"fine": sorted(advice.fine), "coarse": sorted(advice.coarse),
            "reasons": dict(sorted(advice.reasons.items()))}  # fmt: skip


def advice_from_document(document: Mapping[str, Any] | None) -> FidelityAdvice:
    """A stored advice; an unreadable one counts as none (it is recomputed on ingest)."""
    if not document:
        return FidelityAdvice()
    fine, coarse = document.get("fine", []), document.get("coarse", [])
    reasons = document.get("reasons", {})
    if not (isinstance(fine, list) and isinstance(coarse, list) and isinstance(reasons, dict)):
        return FidelityAdvice()
    return FidelityAdvice(
        frozenset(str(m) for m in fine),
        frozenset(str(m) for m in coarse),
        {str(k): str(v) for k, v in reasons.items()},
    )
