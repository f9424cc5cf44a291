"""The telemetry policy decision: which metric sets a device reports, at what window length.

The control plane pushes a `TelemetryPolicy` in the desired state: metric sets (a name, the
metric-name prefixes it covers, its base window length), which sets are active, and how to
adapt. The agent observes its `DeviceCondition` and asks `decide_sampling` for the
effective windows:

- on battery the windows get coarser (x `battery_factor`, x `low_battery_factor` when the
  battery is low), and so do they under CPU load (x `load_factor`): telemetry must not be
  what drains or starves a device;
- while an anomaly is open on a metric, its set gets finer (/ `anomaly_divisor`) and uploads
  come sooner, so the operator sees the incident in detail; this wins over load and battery
  unless the battery is critical;
- fidelity advice from the control plane (`core.telemetry.fidelity`): a set covering a
  metric near one of its thresholds gets finer (/ `anomaly_divisor`, and uploads come sooner,
  as for an anomaly), a set whose advised metrics are far from theirs coarser
  (x `relaxed_factor`).

Window lengths are snapped down to `WINDOW_LADDER_S`, whose every step divides an hour, so
windows stay aligned across devices and a change of length never straddles an hour.

>>> policy = default_policy()
>>> decide_sampling(policy, DeviceCondition(on_battery=True)).window_s_for("host.cpu.percent")
120
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgefleet.errors import InvalidInput

WINDOW_LADDER_S = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600)


class SamplingMode(StrEnum):
    BASE = "base"
    COARSE = "coarse"
    FINE = "fine"


@dataclass(frozen=True)
class MetricSet:
    """Metrics whose names start with one of `prefixes`, aggregated over `window_s`."""

    name: str
    prefixes: tuple[str, ...]
    window_s: int


@dataclass(frozen=True)
class TelemetryPolicy:
    sets: tuple[MetricSet, ...]
    active_sets: frozenset[str]
    upload_interval_s: int = 300
    load_cpu_percent: float = 85.0
    load_factor: int = 2
    battery_factor: int = 2
    low_battery_percent: float = 20.0
    low_battery_factor: int = 5
    critical_battery_percent: float = 10.0
    anomaly_divisor: int = 4
    anomaly_upload_interval_s: int = 60
    min_window_s: int = 10
    max_window_s: int = 900
    relaxed_factor: int = 5


@dataclass(frozen=True)
class DeviceCondition:
    """What the device observes about itself; None means the sensor is absent. The fine and
    coarse metrics are the control plane's fidelity advice."""

    cpu_percent: float | None = None
    on_battery: bool = False
    battery_percent: float | None = None
    anomalous_metrics: frozenset[str] = frozenset()
    fine_metrics: frozenset[str] = frozenset()
    coarse_metrics: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SetDecision:
    name: str
    prefixes: tuple[str, ...]
    window_s: int
    mode: SamplingMode
    reason: str


@dataclass(frozen=True)
class SamplingDecision:
    sets: tuple[SetDecision, ...]
    upload_interval_s: int
    reason: str
    _by_prefix: tuple[tuple[str, int], ...] = field(default=(), repr=False, compare=False)

    def window_s_for(self, metric: str) -> int | None:
        """The window length for `metric`: its longest matching prefix among the active
        sets wins; None when no active set covers it (the metric is switched off)."""
        for prefix, window_s in self._by_prefix:
            if metric.startswith(prefix):
                return window_s
        return None


def snap_window_s(window_s: float, min_window_s: int = 1, max_window_s: int = 3600) -> int:
    """The largest ladder step <= `window_s`, kept within [min, max] (both snapped too).

    >>> snap_window_s(100), snap_window_s(7), snap_window_s(5000)
    (60, 5, 3600)
    """
    low = max((s for s in WINDOW_LADDER_S if s <= max(min_window_s, 1)), default=1)
    high = max((s for s in WINDOW_LADDER_S if s <= max_window_s), default=1)
    fitting = [s for s in WINDOW_LADDER_S if s <= window_s]
    return min(max(fitting[-1] if fitting else 1, low), high)


def _covers(metric_set: MetricSet, metrics: frozenset[str]) -> list[str]:
    return sorted(m for m in metrics if any(m.startswith(p) for p in metric_set.prefixes))


def _decide_set(
    policy: TelemetryPolicy, metric_set: MetricSet, condition: DeviceCondition
) -> SetDecision:
    battery = condition.battery_percent
    anomalous = _covers(metric_set, condition.anomalous_metrics)
    critical = (
        condition.on_battery and battery is not None and battery < policy.critical_battery_percent
    )
    near = _covers(metric_set, condition.fine_metrics)
    relaxed = _covers(metric_set, condition.coarse_metrics)
    if anomalous and not critical:
        window_s = metric_set.window_s / policy.anomaly_divisor
        mode, reason = SamplingMode.FINE, f"anomaly open on {', '.join(anomalous)}"
    elif near and not critical:
        window_s = metric_set.window_s / policy.anomaly_divisor
        mode, reason = SamplingMode.FINE, f"near a threshold: {', '.join(near)}"
    else:
        factor = 1
        reasons: list[str] = []
        if relaxed and not near:
            factor *= policy.relaxed_factor
            reasons.append(f"far from thresholds: {', '.join(relaxed)}")
        if condition.on_battery:
            low = battery is not None and battery < policy.low_battery_percent
            factor *= policy.low_battery_factor if low else policy.battery_factor
            reasons.append(f"on battery at {battery:g}%" if battery is not None else "on battery")
        cpu = condition.cpu_percent
        if cpu is not None and cpu >= policy.load_cpu_percent:
            factor *= policy.load_factor
            reasons.append(f"cpu {cpu:g}% >= {policy.load_cpu_percent:g}%")
        if anomalous:
            reasons.append(f"anomaly open on {', '.join(anomalous)} but battery critical")
        window_s = metric_set.window_s * factor
        mode = SamplingMode.COARSE if factor > 1 else SamplingMode.BASE
        reason = "; ".join(reasons) if reasons else "base policy"
    snapped = snap_window_s(window_s, policy.min_window_s, policy.max_window_s)
    return SetDecision(metric_set.name, metric_set.prefixes, snapped, mode, reason)


def decide_sampling(policy: TelemetryPolicy, condition: DeviceCondition) -> SamplingDecision:
    """Effective window lengths of the active sets, and the upload interval, with reasons."""
    decisions = tuple(
        _decide_set(policy, s, condition) for s in policy.sets if s.name in policy.active_sets
    )
    upload_s = policy.upload_interval_s
    if any(d.mode is SamplingMode.FINE for d in decisions):
        upload_s = min(upload_s, policy.anomaly_upload_interval_s)
    elif condition.on_battery:
        upload_s *= policy.battery_factor
    by_prefix = sorted(
        ((p, d.window_s) for d in decisions for p in d.prefixes), key=lambda item: -len(item[0])
    )
    reason = "; ".join(f"{d.name}: {d.window_s}s {d.mode} ({d.reason})" for d in decisions)
    return SamplingDecision(decisions, upload_s, reason or "no active sets", tuple(by_prefix))


def default_policy() -> TelemetryPolicy:
    """Host baseline every 60 s and the standard inference KPIs, uploads every 5 minutes."""
    return TelemetryPolicy(
        sets=(
            MetricSet("host", ("host.", "agent."), 60),
            MetricSet("inference", ("inference.",), 60),
        ),
        active_sets=frozenset({"host", "inference"}),
    )


# --- the policy as it travels in the desired-state document --------------------------------

_TUNABLES: dict[str, type] = {
    "upload_interval_s": int,
    "load_cpu_percent": float,
    "load_factor": int,
    "battery_factor": int,
    "low_battery_percent": float,
    "low_battery_factor": int,
    "critical_battery_percent": float,
    "anomaly_divisor": int,
    "anomaly_upload_interval_s": int,
    "min_window_s": int,
    "max_window_s": int,
    "relaxed_factor": int,
}


def policy_to_document(policy: TelemetryPolicy) -> dict[str, Any]:
    """The policy as plain JSON data for the desired-state document."""
    return {
        "sets": [
            {"name": s.name, "prefixes": list(s.prefixes), "window_s": s.window_s}
            for s in policy.sets
        ],
        "active_sets": sorted(policy.active_sets),
        **{key: getattr(policy, key) for key in _TUNABLES},
    }


def _bad(key: str, expected: str) -> InvalidInput:
    return InvalidInput(f"telemetry policy {key}: expected {expected}", code="bad_policy")


def policy_from_document(document: Mapping[str, Any]) -> TelemetryPolicy:
    """Parse and validate a policy document; InvalidInput(code="bad_policy") names the key."""
    raw_sets = document.get("sets")
    if not isinstance(raw_sets, list) or not raw_sets:
        raise _bad("sets", "a non-empty list")
    sets: list[MetricSet] = []
    for i, raw in enumerate(raw_sets):
        key = f"sets[{i}]"
        if not isinstance(raw, Mapping):
            raise _bad(key, "an object with name, prefixes, window_s")
        name, prefixes, window_s = raw.get("name"), raw.get("prefixes"), raw.get("window_s")
        if not isinstance(name, str) or not name or any(s.name == name for s in sets):
            raise _bad(f"{key}.name", "a unique non-empty string")
        if not isinstance(prefixes, list) or not all(isinstance(p, str) and p for p in prefixes):
            raise _bad(f"{key}.prefixes", "a list of non-empty strings")
        if not isinstance(window_s, int) or window_s not in WINDOW_LADDER_S:
            raise _bad(f"{key}.window_s", f"one of {WINDOW_LADDER_S}")
        sets.append(MetricSet(name, tuple(prefixes), window_s))
    active = document.get("active_sets", [s.name for s in sets])
    known = {s.name for s in sets}
    if not isinstance(active, list) or not all(isinstance(a, str) and a in known for a in active):
        raise _bad("active_sets", f"a list of set names among {sorted(known)}")
    tunables: dict[str, Any] = {}
    for key, kind in _TUNABLES.items():
        if key not in document:
            continue
        value = document[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (kind is int and not isinstance(value, int)) or value <= 0:
            raise _bad(key, f"a positive {kind.__name__}")
        tunables[key] = kind(value)
    policy = TelemetryPolicy(tuple(sets), frozenset(active), **tunables)
    if policy.min_window_s > policy.max_window_s:
        raise _bad("min_window_s", "at most max_window_s")
    return policy


def read_telemetry_section(
    section: Mapping[str, Any] | None,
) -> tuple[TelemetryPolicy, frozenset[str]]:
    """What the agent follows: the section's policy and anomalous metrics, or the default
    policy when the control plane sent none (InvalidInput if it sent a broken one)."""
    if not section:
        return default_policy(), frozenset()
    raw_policy = section.get("policy")
    policy = policy_from_document(raw_policy) if raw_policy else default_policy()
    return policy, _metric_names(section, "anomalous_metrics")


def read_fidelity_advice(
    section: Mapping[str, Any] | None,
) -> tuple[frozenset[str], frozenset[str]]:
    """The section's fidelity advice: (fine metrics, coarse metrics); none when absent."""
    if not section:
        return frozenset(), frozenset()
    return _metric_names(section, "fine_metrics"), _metric_names(section, "coarse_metrics")


def _metric_names(section: Mapping[str, Any], key: str) -> frozenset[str]:
    metrics = section.get(key) or []
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise InvalidInput(
            f"telemetry section {key}: expected a list of metric names", code="bad_policy"
        )
    return frozenset(metrics)
