"""KPIs: the few numbers per window that say whether a device's workload is healthy.

A KPI reads one or two metrics of one window (merged across tag sets) and gives one value:

- `p95_latency_ms`: the 95th percentile of `inference.latency_ms` (from the window's sketch);
- `error_rate_pct`: 100 * sum(`inference.errors`) / sum(`inference.requests`);
- or any metric's mean, max or sum.

A window contributes only when it holds at least `min_samples` observations (for a ratio:
of the denominator), so a window with two requests cannot swing a p95 detector.

`DetectionConfig` says which KPIs the control plane watches, how its anomaly detector is
tuned (core.anomaly) and how drift is judged (core.drift). It is part of the fleet telemetry
policy operators edit; `parse_detection` validates it and names the faulty key.

A *cohort* is the devices that should behave alike: the same model (the release they run)
on the same hardware (architecture and accelerators). `cohort_key` names it.

>>> spec = KpiSpec("p95_latency_ms", "inference.latency_ms", Statistic.QUANTILE, quantile=0.95)
>>> w = MetricWindow(start_s=0, length_s=60, count=100, sum=1000.0, min=5.0, max=40.0,
...                  quantiles={0.95: 31.0})
>>> kpi_value(spec, {"inference.latency_ms": w})
31.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from edgefleet.core.device import Device
from edgefleet.core.telemetry.anomaly import DetectorConfig, DetectorKind, Direction
from edgefleet.core.telemetry.drift import DriftThresholds
from edgefleet.errors import InvalidInput

P95_LATENCY_MS = "p95_latency_ms"
ERROR_RATE_PCT = "error_rate_pct"
LATENCY_METRIC = "inference.latency_ms"
REQUESTS_METRIC = "inference.requests"
ERRORS_METRIC = "inference.errors"


class Statistic(StrEnum):
    MEAN = "mean"
    MAX = "max"
    SUM = "sum"
    QUANTILE = "quantile"  # from the window's sketch (timings)
    RATIO = "ratio"  # 100 * sum(metric) / sum(denominator), in percent


@dataclass(frozen=True)
class KpiSpec:
    name: str
    metric: str
    statistic: Statistic
    quantile: float = 0.95
    denominator: str | None = None
    direction: Direction = Direction.UP
    min_samples: int = 1
    drift: bool = False  # also judge the metric's distribution for drift (timings only)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric this KPI reads."""
        return (self.metric,) if self.denominator is None else (self.metric, self.denominator)


@dataclass(frozen=True)
class MetricWindow:
    """One metric over one window of one device, merged across its tag sets."""

    start_s: int
    length_s: int
    count: int
    sum: float
    min: float
    max: float
    quantiles: Mapping[float, float] = field(default_factory=dict)  # timings only


def kpi_value(spec: KpiSpec, windows: Mapping[str, MetricWindow]) -> float | None:
    """The KPI over one window (metric name -> its window), or None without enough data."""
    if spec.statistic is Statistic.RATIO:
        assert spec.denominator is not None
        denominator = windows.get(spec.denominator)
        if denominator is None or denominator.sum <= 0 or denominator.count < spec.min_samples:
            return None
        numerator = windows.get(spec.metric)
        return 100.0 * (numerator.sum if numerator else 0.0) / denominator.sum
    window = windows.get(spec.metric)
    if window is None or window.count < max(1, spec.min_samples):
        return None
    match spec.statistic:
        case Statistic.MEAN:
            return window.sum / window.count
        case Statistic.MAX:
            return window.max
        case Statistic.SUM:
            return window.sum
        case _:
            return window.quantiles.get(spec.quantile)


def kpi_points(
    spec: KpiSpec, windows: Iterable[tuple[str, MetricWindow]]
) -> list[tuple[int, float]]:
    """(window start, KPI value) in time order, from (metric name, window) pairs of one
    device; windows of different metrics pair up by their start."""
    by_start: dict[int, dict[str, MetricWindow]] = {}
    wanted = set(spec.metrics)
    for name, window in windows:
        if name in wanted:
            by_start.setdefault(window.start_s, {})[name] = window
    points = []
    for start_s in sorted(by_start):
        value = kpi_value(spec, by_start[start_s])
        if value is not None:
            points.append((start_s, value))
    return points


@dataclass(frozen=True)
class KpiReading:
    """A KPI over a whole period (for rollout gates): its value and how many observations
    it rests on (the metric's count; for a ratio, the denominator's sum, e.g. requests)."""

    kpi: str
    value: float
    samples: int


def kpi_reading(spec: KpiSpec, period: Mapping[str, MetricWindow]) -> KpiReading | None:
    """The KPI over `period` (metric name -> one window covering the period), or None."""
    value = kpi_value(replace(spec, min_samples=1), period)
    if value is None:
        return None
    if spec.denominator is not None:
        samples = int(period[spec.denominator].sum)
    else:
        samples = period[spec.metric].count
    return KpiReading(spec.name, value, samples)


def cohort_key(device: Device) -> str:
    """`model@version/arch+accelerators`: devices expected to behave alike.

    The model is the release the device reports running (else the one assigned to it).
    """
    active = device.release_status.get("active") if device.release_status else None
    if isinstance(active, Mapping) and active.get("name"):
        model = f"{active['name']}@{active.get('version', '?')}"
    elif device.release_assignment is not None:
        model = f"{device.release_assignment.name}@{device.release_assignment.version}"
    else:
        model = "none"
    hardware = device.inventory.get("hardware", {}) if device.inventory else {}
    arch = str(hardware.get("arch", "unknown")) if isinstance(hardware, Mapping) else "unknown"
    accelerators = hardware.get("accelerators") if isinstance(hardware, Mapping) else None
    accel = "+".join(sorted(str(a) for a in accelerators)) if accelerators else ""
    return f"{model}/{arch}{'+' + accel if accel else ''}"


# --- detection configuration --------------------------------------------------------------


@dataclass(frozen=True)
class DetectionConfig:
    kpis: tuple[KpiSpec, ...]
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    drift: DriftThresholds = field(default_factory=DriftThresholds)
    drift_recent_s: int = 900  # the recent distribution: this long, up to now
    drift_baseline_s: int = 6 * 3600  # compared with this long before it
    min_cohort_devices: int = 3  # peers needed (the device included) for a cohort comparison

    def kpi(self, name: str) -> KpiSpec:
        for spec in self.kpis:
            if spec.name == name:
                return spec
        raise InvalidInput(f"no KPI named {name!r}", code="unknown_kpi")

    def detector_for(self, spec: KpiSpec) -> DetectorConfig:
        return replace(self.detector, direction=spec.direction)


def default_kpis() -> tuple[KpiSpec, ...]:
    return (
        KpiSpec(
            P95_LATENCY_MS, LATENCY_METRIC, Statistic.QUANTILE, quantile=0.95,
            min_samples=5, drift=True,
        ),
        KpiSpec(
            ERROR_RATE_PCT, ERRORS_METRIC, Statistic.RATIO, denominator=REQUESTS_METRIC,
            min_samples=5,
        ),
    )  # fmt: skip


def default_detection() -> DetectionConfig:
    return DetectionConfig(kpis=default_kpis(), detector=DetectorConfig(direction=Direction.UP))


_DETECTOR_KEYS: dict[str, type] = {
    "open_score": float,
    "close_score": float,
    "open_after": int,
    "close_after": int,
    "baseline_windows": int,
    "min_baseline": int,
    "ewma_alpha": float,
    "min_relative_spread": float,
}
_DRIFT_KEYS: dict[str, type] = {
    "psi_warning": float,
    "psi_drift": float,
    "shift_warning": float,
    "shift_drift": float,
    "min_count": int,
}
_KPI_KEYS = {"name", "metric", "statistic", "denominator", "direction", "min_samples", "drift"}


def _bad(key: str, expected: str) -> InvalidInput:
    return InvalidInput(f"telemetry policy {key}: expected {expected}", code="bad_policy")


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _bad(f"{where}.{unknown[0]}", f"one of the keys {', '.join(sorted(allowed))}")


def _number(value: Any, kind: type, key: str, minimum: float = 0.0) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or (kind is int and not isinstance(value, int)) or value <= minimum:
        raise _bad(key, f"a {kind.__name__} above {minimum:g}")
    return kind(value)


def _parse_statistic(text: Any, key: str) -> tuple[Statistic, float]:
    """`mean`, `max`, `sum`, `ratio`, or a quantile written `p95` / `p99.9`."""
    if isinstance(text, str) and text.startswith("p"):
        try:
            percent = float(text[1:])
        except ValueError:
            percent = -1.0
        if 0 < percent < 100:
            return Statistic.QUANTILE, round(percent / 100, 6)
    if isinstance(text, str) and text in {s.value for s in Statistic} - {"quantile"}:
        return Statistic(text), 0.95
    raise _bad(key, "mean, max, sum, ratio or a quantile such as p95")


def _parse_kpi(raw: Any, where: str) -> KpiSpec:
    if not isinstance(raw, Mapping):
        raise _bad(where, "an object with name, metric, statistic")
    _check_keys(raw, _KPI_KEYS, where)
    name, metric = raw.get("name"), raw.get("metric")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise _bad(f"{where}.name", "a name of 1..64 characters")
    if not isinstance(metric, str) or not metric:
        raise _bad(f"{where}.metric", "a metric name")
    statistic, quantile = _parse_statistic(raw.get("statistic"), f"{where}.statistic")
    denominator = raw.get("denominator")
    if (statistic is Statistic.RATIO) != isinstance(denominator, str):
        raise _bad(f"{where}.denominator", "a metric name exactly when statistic is ratio")
    try:
        direction = Direction(raw.get("direction", "up"))
    except ValueError:
        raise _bad(f"{where}.direction", "up, down or both") from None
    min_samples = raw.get("min_samples", 1)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise _bad(f"{where}.min_samples", "a positive int")
    drift = raw.get("drift", False)
    if not isinstance(drift, bool) or (drift and statistic is not Statistic.QUANTILE):
        raise _bad(f"{where}.drift", "true only for a quantile KPI (it needs sketches)")
    return KpiSpec(name, metric, statistic, quantile, denominator, direction, min_samples, drift)


def parse_detection(raw: Any) -> DetectionConfig:
    """The `detection` section of the fleet telemetry policy; missing keys keep defaults."""
    if raw is None:
        return default_detection()
    if not isinstance(raw, Mapping):
        raise _bad("detection", "an object")
    allowed = {
        "kpis",
        "detector",
        "drift_recent_s",
        "drift_baseline_s",
        "min_cohort_devices",
        *_DETECTOR_KEYS,
        *(f"drift_{k}" for k in _DRIFT_KEYS),
    }
    _check_keys(raw, allowed, "detection")
    base = default_detection()
    kpis = base.kpis
    if "kpis" in raw:
        items = raw["kpis"]
        if not isinstance(items, list):
            raise _bad("detection.kpis", "a list")
        kpis = tuple(_parse_kpi(item, f"detection.kpis[{i}]") for i, item in enumerate(items))
        names = [k.name for k in kpis]
        if len(set(names)) != len(names):
            raise _bad("detection.kpis", "unique KPI names")
    detector_changes: dict[str, Any] = {}
    if "detector" in raw:
        try:
            detector_changes["kind"] = DetectorKind(raw["detector"])
        except ValueError:
            raise _bad("detection.detector", "robust_z or ewma") from None
    for key, kind in _DETECTOR_KEYS.items():
        if key in raw:
            detector_changes[key] = _number(raw[key], kind, f"detection.{key}")
    try:
        detector = replace(base.detector, **detector_changes)
    except InvalidInput as e:
        raise _bad("detection", e.message) from None
    drift_changes = {
        key: _number(raw[f"drift_{key}"], kind, f"detection.drift_{key}")
        for key, kind in _DRIFT_KEYS.items()
        if f"drift_{key}" in raw
    }
    try:
        drift = replace(base.drift, **drift_changes)
    except InvalidInput as e:
        raise _bad("detection", e.message) from None
    windows = {
        key: _number(raw.get(key, getattr(base, key)), int, f"detection.{key}")
        for key in ("drift_recent_s", "drift_baseline_s", "min_cohort_devices")
    }
    return DetectionConfig(kpis, detector, drift, **windows)


def detection_to_document(config: DetectionConfig) -> dict[str, Any]:
    """The detection section as plain data (what `parse_detection` reads back)."""
    kpis = []
    for spec in config.kpis:
        statistic = (
            f"p{spec.quantile * 100:g}"
            if spec.statistic is Statistic.QUANTILE
            else spec.statistic.value
        )
        item: dict[str, Any] = {
            "name": spec.name,
            "metric": spec.metric,
            "statistic": statistic,
            "direction": spec.direction.value,
            "min_samples": spec.min_samples,
        }
        if spec.denominator is not None:
            item["denominator"] = spec.denominator
        if spec.drift:
            item["drift"] = True
        kpis.append(item)
    return {
        "kpis": kpis,
        "detector": config.detector.kind.value,
        **{key: getattr(config.detector, key) for key in _DETECTOR_KEYS},
        **{f"drift_{key}": getattr(config.drift, key) for key in _DRIFT_KEYS},
        "drift_recent_s": config.drift_recent_s,
        "drift_baseline_s": config.drift_baseline_s,
        "min_cohort_devices": config.min_cohort_devices,
    }  # fmt: skip
