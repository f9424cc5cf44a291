"""OTLP/JSON metrics requests read into the same `OtlpMetric`s as `otlp.decode_request`.

The protobuf JSON mapping: field names in lowerCamelCase (the proto names are accepted
too), 64-bit integers as strings or numbers, enums as integers (their names are accepted
too), doubles as numbers or "NaN" / "Infinity" / "-Infinity".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edgefleet.core.telemetry.windows import Tags, normalize_tags
from edgefleet.transport.otlp import (
    HistogramPoint,
    MetricType,
    NumberPoint,
    OtlpMetric,
    Temporality,
    bad_request,
    explicit_buckets,
    exponential_buckets,
)

_TEMPORALITY_NAMES = {f"AGGREGATION_TEMPORALITY_{t.name}": t for t in Temporality}


def _get(obj: Mapping[str, Any], camel: str, default: Any = None) -> Any:
    """A field by its JSON name, or by its proto name (receivers accept both)."""
    if camel in obj:
        return obj[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(snake, default)


def _list(obj: Mapping[str, Any], camel: str) -> list[Any]:
    value = _get(obj, camel, [])
    if not isinstance(value, list):
        raise bad_request(f"{camel} is not a list")
    return value


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{what} is not an object")
    return value


def _int(value: Any, what: str) -> int:
    # 64-bit integers are strings in OTLP/JSON; plain numbers are accepted too.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise bad_request(f"{what} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{what} is not an integer") from None


def _temporality_json(value: Any) -> Temporality:
    if isinstance(value, str) and value in _TEMPORALITY_NAMES:
        return _TEMPORALITY_NAMES[value]
    number = _int(value, "aggregationTemporality")
    try:
        return Temporality(number)
    except ValueError:
        raise bad_request(f"unknown aggregation temporality {number}") from None


def _float(value: Any, what: str) -> float:
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{what} is not a number")
    return float(value)


def _attributes_json(items: list[Any]) -> Tags:
    pairs = []
    for item in items:
        kv = _object(item, "an attribute")
        key = _get(kv, "key")
        value = _object(_get(kv, "value", {}), "an attribute value")
        if not isinstance(key, str):
            raise bad_request("an attribute key is not a string")
        if "stringValue" in value or "string_value" in value:
            text = _get(value, "stringValue")
            if not isinstance(text, str):
                raise bad_request("a string attribute is not a string")
        elif "boolValue" in value or "bool_value" in value:
            text = "true" if _get(value, "boolValue") is True else "false"
        elif "intValue" in value or "int_value" in value:
            text = str(_int(_get(value, "intValue"), "an int attribute"))
        elif "doubleValue" in value or "double_value" in value:
            text = repr(_float(_get(value, "doubleValue"), "a double attribute"))
        else:
            raise bad_request("an attribute value is not a string, bool, int or double")
        pairs.append((key, text))
    return normalize_tags(pairs)


def _optional_float(obj: Mapping[str, Any], camel: str) -> float | None:
    value = _get(obj, camel)
    return None if value is None else _float(value, camel)


def _number_point_json(obj: Mapping[str, Any]) -> NumberPoint:
    if _get(obj, "asDouble") is not None:
        value = _float(_get(obj, "asDouble"), "asDouble")
    else:
        value = float(_int(_get(obj, "asInt", 0), "asInt"))
    return NumberPoint(
        _attributes_json(_list(obj, "attributes")),
        _int(_get(obj, "startTimeUnixNano", 0), "startTimeUnixNano"),
        _int(_get(obj, "timeUnixNano", 0), "timeUnixNano"), value,
    )  # fmt: skip


def _histogram_point_json(obj: Mapping[str, Any], exponential: bool) -> HistogramPoint:
    if exponential:
        sides = []
        for side in ("positive", "negative"):
            data = _object(_get(obj, side, {}), side)
            sides.append(
                (
                    _int(_get(data, "offset", 0), "offset"),
                    [_int(n, "bucketCounts") for n in _list(data, "bucketCounts")],
                )
            )
        buckets = exponential_buckets(
            _int(_get(obj, "scale", 0), "scale"), _int(_get(obj, "zeroCount", 0), "zeroCount"),
            _float(_get(obj, "zeroThreshold", 0), "zeroThreshold"), sides[0], sides[1],
        )  # fmt: skip
    else:
        buckets = explicit_buckets(
            [_float(b, "explicitBounds") for b in _list(obj, "explicitBounds")],
            [_int(n, "bucketCounts") for n in _list(obj, "bucketCounts")],
        )
    return HistogramPoint(
        _attributes_json(_list(obj, "attributes")),
        _int(_get(obj, "startTimeUnixNano", 0), "startTimeUnixNano"),
        _int(_get(obj, "timeUnixNano", 0), "timeUnixNano"),
        _int(_get(obj, "count", 0), "count"), _optional_float(obj, "sum"),
        _optional_float(obj, "min"), _optional_float(obj, "max"), buckets,
    )  # fmt: skip


def _metric_json(obj: Mapping[str, Any]) -> OtlpMetric:
    name = _get(obj, "name")
    if not isinstance(name, str):
        raise bad_request("a metric has no name")
    for key, kind in (("gauge", MetricType.GAUGE), ("sum", MetricType.SUM),
                      ("histogram", MetricType.HISTOGRAM),
                      ("exponentialHistogram", MetricType.HISTOGRAM)):  # fmt: skip
        data = _get(obj, key)
        if data is None:
            continue
        data = _object(data, key)
        temporality = _temporality_json(_get(data, "aggregationTemporality", 0))
        monotonic = _get(data, "isMonotonic", False) is True
        points = [_object(p, "a data point") for p in _list(data, "dataPoints")]
        if kind is MetricType.HISTOGRAM:
            histograms = tuple(_histogram_point_json(p, key != "histogram") for p in points)
            return OtlpMetric(name, kind, temporality, monotonic, histograms=histograms)
        numbers = tuple(_number_point_json(p) for p in points)
        return OtlpMetric(name, kind, temporality, monotonic, numbers=numbers)
    return OtlpMetric(name, MetricType.UNSUPPORTED, Temporality.UNSPECIFIED, False)


def decode_json_request(body: bytes) -> list[OtlpMetric]:
    """The metrics of an ExportMetricsServiceRequest in OTLP/JSON."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise bad_request("the body is not JSON") from None
    metrics: list[OtlpMetric] = []
    for resource_metrics in _list(_object(document, "the request"), "resourceMetrics"):
        for scope_metrics in _list(_object(resource_metrics, "resourceMetrics"), "scopeMetrics"):
            for metric in _list(_object(scope_metrics, "scopeMetrics"), "metrics"):
                metrics.append(_metric_json(_object(metric, "a metric")))
    return metrics
