"""The comparison encoding: the same windows as an OTLP ExportMetricsServiceRequest + gzip.

Built the way an OpenTelemetry SDK or the collector's StatsD receiver exports them:

- counter -> Sum (delta temporality, monotonic), integer values where the total is whole;
- gauge   -> Gauge with the last value; in `same_information` mode also a Summary data point
             (count, sum, quantile 0 = min, quantile 1 = max), since our windows carry those;
- timing  -> ExponentialHistogram computed from the raw samples with the SDK's defaults
             (at most 160 buckets, the largest scale <= 20 that fits), with count/sum/min/max.

One request per upload, one ResourceMetrics (service.name, host.id), one ScopeMetrics, one
Metric per name and kind holding every window of the batch as data points; gzip at zlib's
default level, as OTLP/HTTP exporters send it.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Mapping, Sequence

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from edgefleet.core.telemetry.windows import MetricKind, Tags, Window

MAX_EXP_BUCKETS = 160
MAX_SCALE = 20
DELTA = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NANOS = 1_000_000_000

RawSamples = Mapping[tuple[str, Tags, int], Sequence[float]]


def _attributes(tags: Tags) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in tags]


def _exp_index(value: float, scale: int) -> int:
    # Bucket i holds (base**i, base**(i+1)] with base = 2**(2**-scale).
    return math.ceil(math.log2(value) * 2.0**scale) - 1


def exponential_buckets(samples: Sequence[float]) -> tuple[int, int, int, list[int]]:
    """(scale, zero_count, offset, counts) as the SDK's exponential aggregation builds them."""
    positive = [v for v in samples if v > 0]
    zero_count = len(samples) - len(positive)
    if not positive:
        return 0, zero_count, 0, []
    low, high = min(positive), max(positive)
    scale = MAX_SCALE
    while scale > -10 and _exp_index(high, scale) - _exp_index(low, scale) + 1 > MAX_EXP_BUCKETS:
        scale -= 1
    offset = _exp_index(low, scale)
    counts = [0] * (_exp_index(high, scale) - offset + 1)
    for value in positive:
        counts[_exp_index(value, scale) - offset] += 1
    return scale, zero_count, offset, counts


def _number_point(window: Window, value: float) -> pb.NumberDataPoint:
    point = pb.NumberDataPoint(
        attributes=_attributes(window.tags),
        start_time_unix_nano=window.start_s * NANOS,
        time_unix_nano=window.end_s * NANOS,
    )
    if value == int(value) and abs(value) < 2**62:
        point.as_int = int(value)
    else:
        point.as_double = value
    return point


def _histogram_point(window: Window, samples: Sequence[float]) -> pb.ExponentialHistogramDataPoint:
    scale, zero_count, offset, counts = exponential_buckets(samples)
    return pb.ExponentialHistogramDataPoint(
        attributes=_attributes(window.tags),
        start_time_unix_nano=window.start_s * NANOS,
        time_unix_nano=window.end_s * NANOS,
        count=window.count,
        sum=window.sum,
        scale=scale,
        zero_count=zero_count,
        positive=pb.ExponentialHistogramDataPoint.Buckets(offset=offset, bucket_counts=counts),
        min=window.min,
        max=window.max,
    )


def _summary_point(window: Window) -> pb.SummaryDataPoint:
    quantile = pb.SummaryDataPoint.ValueAtQuantile
    return pb.SummaryDataPoint(
        attributes=_attributes(window.tags),
        start_time_unix_nano=window.start_s * NANOS,
        time_unix_nano=window.end_s * NANOS,
        count=window.count,
        sum=window.sum,
        quantile_values=[
            quantile(quantile=0.0, value=window.min),
            quantile(quantile=1.0, value=window.max),
        ],
    )


def otlp_request(
    windows: Sequence[Window], raw: RawSamples, device_id: str, *, same_information: bool
) -> ExportMetricsServiceRequest:
    """One export request holding `windows` (raw samples feed the timing histograms)."""
    by_metric: dict[tuple[str, MetricKind], list[Window]] = {}
    for window in windows:
        by_metric.setdefault((window.name, window.kind), []).append(window)
    metrics: list[pb.Metric] = []
    for (name, kind), group in by_metric.items():
        if kind is MetricKind.COUNTER:
            points = [_number_point(w, w.sum) for w in group]
            metrics.append(
                pb.Metric(
                    name=name,
                    sum=pb.Sum(
                        data_points=points, aggregation_temporality=DELTA, is_monotonic=True
                    ),
                )
            )
        elif kind is MetricKind.GAUGE:
            metrics.append(
                pb.Metric(
                    name=name, gauge=pb.Gauge(data_points=[_number_point(w, w.last) for w in group])
                )
            )
            if same_information:
                summary = pb.Summary(data_points=[_summary_point(w) for w in group])
                metrics.append(pb.Metric(name=f"{name}.window", summary=summary))
        else:
            points = [_histogram_point(w, raw[(w.name, w.tags, w.start_s)]) for w in group]
            histogram = pb.ExponentialHistogram(data_points=points, aggregation_temporality=DELTA)
            metrics.append(pb.Metric(name=name, exponential_histogram=histogram))
    resource = Resource(
        attributes=[
            KeyValue(key="service.name", value=AnyValue(string_value="edgefleet-agent")),
            KeyValue(key="host.id", value=AnyValue(string_value=device_id)),
        ]
    )
    return ExportMetricsServiceRequest(
        resource_metrics=[
            pb.ResourceMetrics(
                resource=resource,
                scope_metrics=[
                    pb.ScopeMetrics(scope=InstrumentationScope(name="edgefleet"), metrics=metrics)
                ],
            )
        ]
    )


def otlp_gzip_bytes(request: ExportMetricsServiceRequest) -> bytes:
    """The request body an OTLP/HTTP exporter sends with `Content-Encoding: gzip`."""
    return gzip.compress(request.SerializeToString(), compresslevel=6, mtime=0)
