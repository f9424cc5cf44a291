"""OTLP metrics (OpenTelemetry protocol, `opentelemetry.proto.metrics.v1`), both ways.

Out (the control plane's exporter): `encode_windows` writes an `ExportMetricsServiceRequest`
with one ResourceMetrics per device. Each window becomes one data point whose start and
time are the window's start and end:

    counter window  ->  Sum, DELTA temporality (monotonic unless a value was negative),
                        value = the window's sum
    gauge window    ->  Gauge, value = the window's last reading, at the window's end
    timing window   ->  Summary: the window's count and sum, quantiles 0 (min), 0.5, 0.9,
                        0.95, 0.99 and 1 (max) read from its sketch (within 1%)

The window's tags are the data point's attributes.

In (the agent's receiver, `otlp_receiver.py`): `decode_request` reads a request in protobuf
(and `otlp_json.decode_json_request` one in OTLP/JSON) into `OtlpMetric`s: gauges and sums as
`NumberPoint`s, explicit-bucket and exponential histograms both as `HistogramPoint`s whose
buckets carry their own bounds. Summaries are reported as unsupported. Resource and scope
attributes are not kept: what a workload's series are is its data points' attributes.
Malformed input raises `InvalidInput`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from edgefleet.core.telemetry.windows import MetricKind, Tags, Window, normalize_tags
from edgefleet.errors import InvalidInput
from edgefleet.transport import protowire as pw

SUMMARY_QUANTILES = (0.5, 0.9, 0.95, 0.99)
NANOS = 1_000_000_000
PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
JSON_CONTENT_TYPE = "application/json"


class Temporality(IntEnum):
    UNSPECIFIED = 0
    DELTA = 1
    CUMULATIVE = 2


class MetricType(StrEnum):
    GAUGE = "gauge"
    SUM = "sum"
    HISTOGRAM = "histogram"
    UNSUPPORTED = "unsupported"  # a summary, or no data at all


# -- out: windows as an export request ------------------------------------------------------


def _key_value(key: str, value: str) -> pw.Writer:
    any_value = pw.Writer()
    any_value.string(1, value)
    kv = pw.Writer()
    kv.string(1, key)
    kv.message(2, any_value)
    return kv


def _attributes(w: pw.Writer, number: int, attributes: Iterable[tuple[str, str]]) -> None:
    for key, value in attributes:
        w.message(number, _key_value(key, value))


def _number_point(window: Window, value: float, with_start: bool) -> pw.Writer:
    point = pw.Writer()
    if with_start:
        point.fixed64(2, window.start_s * NANOS)
    point.fixed64(3, window.end_s * NANOS)
    point.double(4, value)
    _attributes(point, 7, window.tags)
    return point


def _summary_point(window: Window) -> pw.Writer:
    point = pw.Writer()
    point.fixed64(2, window.start_s * NANOS)
    point.fixed64(3, window.end_s * NANOS)
    point.fixed64(4, window.count)
    point.double(5, window.sum)
    quantiles = [(0.0, window.min)]
    if window.sketch is not None:
        quantiles += [(q, window.sketch.quantile(q)) for q in SUMMARY_QUANTILES]
    quantiles.append((1.0, window.max))
    for q, value in quantiles:
        at = pw.Writer()
        at.double(1, q)
        at.double(2, value)
        point.message(6, at)
    _attributes(point, 7, window.tags)
    return point


def _metric(name: str, kind: MetricKind, windows: Sequence[Window]) -> pw.Writer:
    data = pw.Writer()
    metric = pw.Writer()
    metric.string(1, name)
    if kind is MetricKind.COUNTER:
        for window in windows:
            data.message(1, _number_point(window, window.sum, with_start=True))
        data.varint(2, Temporality.DELTA)
        data.varint(3, int(all(w.min >= 0 for w in windows)))
        metric.message(7, data)
    elif kind is MetricKind.GAUGE:
        for window in windows:
            data.message(1, _number_point(window, window.last, with_start=False))
        metric.message(5, data)
    else:
        for window in windows:
            data.message(1, _summary_point(window))
        metric.message(11, data)
    return metric


def encode_windows(
    resources: Sequence[tuple[Mapping[str, str], Sequence[Window]]],
    scope_name: str,
    scope_version: str,
) -> bytes:
    """An ExportMetricsServiceRequest: per (resource attributes, windows), one
    ResourceMetrics with one ScopeMetrics holding a Metric per name and kind."""
    request = pw.Writer()
    for attributes, windows in resources:
        scope = pw.Writer()
        scope.string(1, scope_name)
        scope.string(2, scope_version)
        scope_metrics = pw.Writer()
        scope_metrics.message(1, scope)
        groups: dict[tuple[str, MetricKind], list[Window]] = {}
        for window in windows:
            groups.setdefault((window.name, window.kind), []).append(window)
        for (name, kind), group in groups.items():
            scope_metrics.message(2, _metric(name, kind, group))
        resource = pw.Writer()
        _attributes(resource, 1, sorted(attributes.items()))
        resource_metrics = pw.Writer()
        resource_metrics.message(1, resource)
        resource_metrics.message(2, scope_metrics)
        request.message(1, resource_metrics)
    return bytes(request.data)


def decode_response(body: bytes) -> tuple[int, str]:
    """(rejected data points, error message) of an ExportMetricsServiceResponse."""
    rejected, message = 0, ""
    for number, wire_type, value in pw.read_fields(body):
        if number == 1 and wire_type == pw.LENGTH and isinstance(value, bytes):
            for inner, inner_type, inner_value in pw.read_fields(value):
                if inner == 1 and inner_type == pw.VARINT and isinstance(inner_value, int):
                    rejected = pw.as_int64(inner_value)
                elif inner == 2 and isinstance(inner_value, bytes):
                    message = inner_value.decode(errors="replace")
    return rejected, message


# -- in: an export request as metrics -------------------------------------------------------


@dataclass(frozen=True)
class NumberPoint:
    attributes: Tags
    start_ns: int
    time_ns: int
    value: float


@dataclass(frozen=True)
class Bucket:
    """Values in (lower, upper]; the zero bucket of an exponential histogram is [-z, z]."""

    lower: float
    upper: float
    count: int


@dataclass(frozen=True)
class HistogramPoint:
    attributes: Tags
    start_ns: int
    time_ns: int
    count: int
    sum: float | None
    min: float | None
    max: float | None
    buckets: tuple[Bucket, ...]


@dataclass(frozen=True)
class OtlpMetric:
    name: str
    type: MetricType
    temporality: Temporality
    monotonic: bool
    numbers: tuple[NumberPoint, ...] = ()
    histograms: tuple[HistogramPoint, ...] = ()


def bad_request(why: str) -> InvalidInput:
    return InvalidInput(f"malformed OTLP metrics request: {why}", code="bad_otlp_request")


def _text(value: int | bytes, what: str) -> str:
    if not isinstance(value, bytes):
        raise bad_request(f"{what} is not a string")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise bad_request(f"{what} is not UTF-8") from None


def _fields(data: int | bytes, what: str) -> Iterator[pw.Field]:
    if not isinstance(data, bytes):
        raise bad_request(f"{what} is not a message")
    return pw.read_fields(data)


def _attribute_text(kind: int, value: int | bytes) -> str:
    if kind == 1:
        return _text(value, "a string attribute")
    if kind == 2 and isinstance(value, int):
        return "true" if value else "false"
    if kind == 3 and isinstance(value, int):
        return str(pw.as_int64(value))
    if kind == 4 and isinstance(value, int):
        return repr(pw.as_double(value))
    raise bad_request("an attribute value is not a string, bool, int or double")


def _key_value_pb(data: int | bytes) -> tuple[str, str]:
    key, text = "", ""
    for number, _, value in _fields(data, "an attribute"):
        if number == 1:
            key = _text(value, "an attribute key")
        elif number == 2:
            for kind, _, inner in _fields(value, "an attribute value"):
                text = _attribute_text(kind, inner)
    return key, text


def _number_point_pb(data: int | bytes) -> NumberPoint:
    attributes: list[tuple[str, str]] = []
    start_ns = time_ns = 0
    value = math.nan
    for number, _, raw in _fields(data, "a data point"):
        if number == 7:
            attributes.append(_key_value_pb(raw))
        elif number in (2, 3, 4, 6) and not isinstance(raw, int):
            raise bad_request(f"field {number} of a number data point is not a number")
        elif number == 2:
            start_ns = int(raw)
        elif number == 3:
            time_ns = int(raw)
        elif number == 4:
            value = pw.as_double(int(raw))
        elif number == 6:
            value = float(pw.as_int64(int(raw)))
    return NumberPoint(normalize_tags(attributes), start_ns, time_ns, value)


def explicit_buckets(bounds: Sequence[float], counts: Sequence[int]) -> tuple[Bucket, ...]:
    """Buckets of an explicit-bounds histogram: (-inf, b0], (b0, b1], ..., (bn, +inf)."""
    if counts and len(counts) != len(bounds) + 1:
        raise bad_request(f"{len(counts)} bucket counts for {len(bounds)} bounds")
    edges = [-math.inf, *bounds, math.inf]
    return tuple(Bucket(edges[i], edges[i + 1], n) for i, n in enumerate(counts) if n)


def exponential_buckets(
    scale: int, zero_count: int, zero_threshold: float,
    positive: tuple[int, Sequence[int]], negative: tuple[int, Sequence[int]],
) -> tuple[Bucket, ...]:  # fmt: skip
    """Buckets of an exponential histogram: index i covers (base**i, base**(i+1)] with
    base = 2**(2**-scale), mirrored for negative values, plus the zero bucket."""
    if not -10 <= scale <= 20:
        raise bad_request(f"exponential histogram scale {scale} is out of range")
    base = 2.0 ** (2.0**-scale)
    buckets = [Bucket(-zero_threshold, zero_threshold, zero_count)] if zero_count else []
    for sign, (offset, counts) in ((1.0, positive), (-1.0, negative)):
        for i, n in enumerate(counts):
            if n:
                low, high = base ** (offset + i), base ** (offset + i + 1)
                buckets.append(Bucket(low, high, n) if sign > 0 else Bucket(-high, -low, n))
    return tuple(buckets)


def _exponential_side_pb(data: int | bytes) -> tuple[int, list[int]]:
    offset, counts = 0, []
    for number, _, raw in _fields(data, "exponential buckets"):
        if number == 1 and isinstance(raw, int):
            offset = pw.as_sint(raw)
        elif number == 2:
            counts = pw.unpack_varints(raw) if isinstance(raw, bytes) else [int(raw)]
    return offset, counts


def _histogram_point_pb(data: int | bytes, exponential: bool) -> HistogramPoint:
    attributes: list[tuple[str, str]] = []
    values: dict[str, Any] = {
        "start": 0,
        "time": 0,
        "count": 0,
        "sum": None,
        "min": None,
        "max": None,
        "counts": [],
        "bounds": [],
        "scale": 0,
        "zero": 0,
        "zero_threshold": 0.0,
        "positive": (0, []),
        "negative": (0, []),
    }
    layout = ({1: "attributes", 2: "start", 3: "time", 4: "count", 5: "sum", 6: "scale",
               7: "zero", 8: "positive", 9: "negative", 12: "min", 13: "max",
               14: "zero_threshold"} if exponential else
              {9: "attributes", 2: "start", 3: "time", 4: "count", 5: "sum", 6: "counts",
               7: "bounds", 11: "min", 12: "max"})  # fmt: skip
    for number, _, raw in _fields(data, "a histogram data point"):
        name = layout.get(number)
        if name == "attributes":
            attributes.append(_key_value_pb(raw))
        elif name in ("positive", "negative"):
            values[name] = _exponential_side_pb(raw)
        elif name == "counts":
            values[name] += pw.unpack_fixed64(raw) if isinstance(raw, bytes) else [raw]
        elif name == "bounds":
            values[name] += (pw.unpack_doubles(raw) if isinstance(raw, bytes)
                             else [pw.as_double(raw)])  # fmt: skip
        elif name in ("sum", "min", "max", "zero_threshold") and isinstance(raw, int):
            values[name] = pw.as_double(raw)
        elif name == "scale" and isinstance(raw, int):
            values[name] = pw.as_sint(raw)
        elif name is not None and isinstance(raw, int):
            values[name] = raw
    if exponential:
        buckets = exponential_buckets(values["scale"], values["zero"], values["zero_threshold"],
                                      values["positive"], values["negative"])  # fmt: skip
    else:
        buckets = explicit_buckets(values["bounds"], values["counts"])
    return HistogramPoint(
        normalize_tags(attributes), values["start"], values["time"], values["count"],
        values["sum"], values["min"], values["max"], buckets,
    )  # fmt: skip


_DATA_FIELDS = {5: MetricType.GAUGE, 7: MetricType.SUM, 9: MetricType.HISTOGRAM,
                10: MetricType.HISTOGRAM, 11: MetricType.UNSUPPORTED}  # fmt: skip


def _metric_pb(data: int | bytes) -> OtlpMetric:
    name = ""
    kind = MetricType.UNSUPPORTED
    temporality = Temporality.UNSPECIFIED
    monotonic = False
    numbers: list[NumberPoint] = []
    histograms: list[HistogramPoint] = []
    for number, _, raw in _fields(data, "a metric"):
        if number == 1:
            name = _text(raw, "a metric name")
        elif number in _DATA_FIELDS:
            kind = _DATA_FIELDS[number]
            for inner, _, value in _fields(raw, "metric data"):
                if inner == 1 and kind in (MetricType.GAUGE, MetricType.SUM):
                    numbers.append(_number_point_pb(value))
                elif inner == 1 and kind is MetricType.HISTOGRAM:
                    histograms.append(_histogram_point_pb(value, exponential=number == 10))
                elif inner == 2 and isinstance(value, int) and kind is not MetricType.GAUGE:
                    temporality = _temporality(value)
                elif inner == 3 and isinstance(value, int):
                    monotonic = bool(value)
    return OtlpMetric(name, kind, temporality, monotonic, tuple(numbers), tuple(histograms))


def _temporality(value: int) -> Temporality:
    try:
        return Temporality(value)
    except ValueError:
        raise bad_request(f"unknown aggregation temporality {value}") from None


def decode_request(body: bytes) -> list[OtlpMetric]:
    """The metrics of an ExportMetricsServiceRequest in protobuf."""
    metrics: list[OtlpMetric] = []
    for number, _, resource_metrics in pw.read_fields(body):
        if number != 1:
            continue
        for inner, _, scope_metrics in _fields(resource_metrics, "resource metrics"):
            if inner != 2:
                continue
            for field, _, metric in _fields(scope_metrics, "scope metrics"):
                if field == 2:
                    metrics.append(_metric_pb(metric))
    return metrics
