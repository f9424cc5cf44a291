"""OTLP metrics both ways, checked against the official schema (opentelemetry-proto): windows
the control plane exports decode as the series, values, times and attributes they came
from; requests the official classes write (protobuf and OTLP/JSON) decode alike, and the
agent's intake turns cumulative series into the increments between exports."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime

import httpx
import pytest
from google.protobuf.json_format import MessageToJson  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from edgefleet.agent.telemetry.otlp_intake import OtlpIntake
from edgefleet.agent.telemetry.otlp_json import decode_json_request
from edgefleet.agent.telemetry.otlp_receiver import start_otlp_receiver
from edgefleet.clock import SystemClock
from edgefleet.core.telemetry.sketch import DDSketch
from edgefleet.core.telemetry.windows import Aggregator, MetricKind, Window
from edgefleet.errors import InvalidInput
from edgefleet.transport.otlp import (
    Bucket,
    MetricType,
    Temporality,
    decode_request,
    encode_windows,
)

T0 = 1_800_000_000
NOW = datetime.fromtimestamp(T0 + 5, UTC)
CUMULATIVE = pb.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = pb.AGGREGATION_TEMPORALITY_DELTA


def attrs(**pairs: str) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in _kvs(pairs)}


def _kvs(pairs: dict[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in pairs.items()]


def test_windows_decode_with_the_official_schema() -> None:
    sketch = DDSketch()
    for v in range(1, 101):
        sketch.add(float(v))
    windows = [
        Window("inference.requests", MetricKind.COUNTER, (("model", "v3"),), T0, 60,
               120, 120.0, 1.0, 1.0, 1.0),
        Window("host.cpu.percent", MetricKind.GAUGE, (), T0, 60, 6, 180.0, 20.0, 40.0, 35.5),
        Window("inference.latency_ms", MetricKind.TIMING, (), T0, 60, 100, 5050.0, 1.0,
               100.0, 100.0, sketch),
    ]  # fmt: skip
    body = encode_windows([({"device.id": "dev-1", "edgefleet.label.site": "berlin"}, windows)],
                          "edgefleet", "0.1.0")  # fmt: skip
    request = ExportMetricsServiceRequest.FromString(body)
    (resource_metrics,) = request.resource_metrics
    assert {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes} == {
        "device.id": "dev-1", "edgefleet.label.site": "berlin"}  # fmt: skip
    (scope,) = resource_metrics.scope_metrics
    assert (scope.scope.name, scope.scope.version) == ("edgefleet", "0.1.0")
    metrics = {m.name: m for m in scope.metrics}
    counter = metrics["inference.requests"].sum
    assert counter.aggregation_temporality == DELTA and counter.is_monotonic
    (point,) = counter.data_points
    assert (point.start_time_unix_nano, point.time_unix_nano, point.as_double) == (
        T0 * 10**9, (T0 + 60) * 10**9, 120.0)  # fmt: skip
    assert [(kv.key, kv.value.string_value) for kv in point.attributes] == [("model", "v3")]
    (gauge,) = metrics["host.cpu.percent"].gauge.data_points
    assert (gauge.time_unix_nano, gauge.as_double) == ((T0 + 60) * 10**9, 35.5)
    (summary,) = metrics["inference.latency_ms"].summary.data_points
    assert (summary.count, summary.sum) == (100, 5050.0)
    quantiles = {q.quantile: q.value for q in summary.quantile_values}
    assert quantiles[0.0] == 1.0 and quantiles[1.0] == 100.0
    assert quantiles[0.95] == pytest.approx(95, rel=0.01)


def official_request() -> ExportMetricsServiceRequest:
    started = (T0 - 10) * 10**9
    at = T0 * 10**9
    point_attrs = _kvs({"model": "v3"})
    return ExportMetricsServiceRequest(resource_metrics=[pb.ResourceMetrics(scope_metrics=[
        pb.ScopeMetrics(metrics=[
            pb.Metric(name="inference.requests", sum=pb.Sum(
                aggregation_temporality=CUMULATIVE, is_monotonic=True,
                data_points=[pb.NumberDataPoint(start_time_unix_nano=started, time_unix_nano=at,
                                                as_int=42, attributes=point_attrs)])),
            pb.Metric(name="queue.depth", gauge=pb.Gauge(data_points=[
                pb.NumberDataPoint(time_unix_nano=at, as_double=-2.5)])),
            pb.Metric(name="inference.latency_ms", histogram=pb.Histogram(
                aggregation_temporality=DELTA, data_points=[pb.HistogramDataPoint(
                    start_time_unix_nano=started, time_unix_nano=at, count=4, sum=70.0,
                    bucket_counts=[1, 2, 1], explicit_bounds=[10.0, 20.0], min=5.0,
                    max=35.0)])),
            pb.Metric(name="inference.size", exponential_histogram=pb.ExponentialHistogram(
                aggregation_temporality=DELTA, data_points=[pb.ExponentialHistogramDataPoint(
                    count=3, sum=7.0, scale=0, zero_count=1,
                    positive=pb.ExponentialHistogramDataPoint.Buckets(
                        offset=1, bucket_counts=[0, 2]))])),
            pb.Metric(name="old.summary", summary=pb.Summary(
                data_points=[pb.SummaryDataPoint(count=1, sum=1.0)])),
        ])])])  # fmt: skip


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_official_requests_decode_in_both_encodings(encoding: str) -> None:
    request = official_request()
    metrics = (decode_request(request.SerializeToString()) if encoding == "protobuf"
               else decode_json_request(MessageToJson(request).encode()))  # fmt: skip
    by_name = {m.name: m for m in metrics}
    requests = by_name["inference.requests"]
    assert (requests.type, requests.temporality, requests.monotonic) == (
        MetricType.SUM, Temporality.CUMULATIVE, True)  # fmt: skip
    (point,) = requests.numbers
    assert (point.value, point.attributes, point.start_ns) == (
        42.0, (("model", "v3"),), (T0 - 10) * 10**9)  # fmt: skip
    assert by_name["queue.depth"].numbers[0].value == -2.5
    (histogram,) = by_name["inference.latency_ms"].histograms
    assert (histogram.count, histogram.sum, histogram.min, histogram.max) == (4, 70.0, 5.0, 35.0)
    assert histogram.buckets == (Bucket(float("-inf"), 10.0, 1), Bucket(10.0, 20.0, 2),
                                 Bucket(20.0, float("inf"), 1))  # fmt: skip
    (exponential,) = by_name["inference.size"].histograms
    assert exponential.buckets == (Bucket(0.0, 0.0, 1), Bucket(4.0, 8.0, 2))
    assert by_name["old.summary"].type is MetricType.UNSUPPORTED


def test_truncated_and_mistyped_requests_are_refused() -> None:
    body = official_request().SerializeToString()
    with pytest.raises(InvalidInput):
        decode_request(body[:-3])
    with pytest.raises(InvalidInput):
        decode_json_request(b'{"resourceMetrics": [{"scopeMetrics": 3}]}')


def windows_after(intake: OtlpIntake, *exports: ExportMetricsServiceRequest) -> list[Window]:
    for export in exports:
        intake.take(decode_request(export.SerializeToString()), NOW)
    return intake.aggregator.close_all(NOW)


def counter_export(value: int, start_s: int) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(resource_metrics=[pb.ResourceMetrics(scope_metrics=[
        pb.ScopeMetrics(metrics=[pb.Metric(name="inference.requests", sum=pb.Sum(
            aggregation_temporality=CUMULATIVE, is_monotonic=True, data_points=[
                pb.NumberDataPoint(start_time_unix_nano=start_s * 10**9,
                                   time_unix_nano=T0 * 10**9, as_int=value)]))])])])  # fmt: skip


def test_cumulative_counters_count_the_increase_between_exports() -> None:
    intake = OtlpIntake(Aggregator(), started_ns=(T0 - 100) * 10**9)
    (window,) = windows_after(intake, counter_export(5, T0 - 50), counter_export(12, T0 - 50),
                              counter_export(12, T0 - 50))  # fmt: skip
    assert (window.kind, window.sum) == (MetricKind.COUNTER, 12.0)
    # The workload restarted: its new series counts from zero.
    (window,) = windows_after(intake, counter_export(3, T0 - 1))
    assert window.sum == 3.0


def test_a_series_older_than_the_intake_only_sets_the_baseline() -> None:
    intake = OtlpIntake(Aggregator(), started_ns=T0 * 10**9)
    (window,) = windows_after(intake, counter_export(1000, T0 - 3600),
                              counter_export(1004, T0 - 3600))  # fmt: skip
    assert window.sum == 4.0


def histogram_export(counts: list[int], total: float) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(resource_metrics=[pb.ResourceMetrics(scope_metrics=[
        pb.ScopeMetrics(metrics=[pb.Metric(name="inference.latency_ms", histogram=pb.Histogram(
            aggregation_temporality=CUMULATIVE, data_points=[pb.HistogramDataPoint(
                start_time_unix_nano=(T0 - 1) * 10**9, count=sum(counts), sum=total,
                bucket_counts=counts, explicit_bounds=[10.0, 20.0, 40.0],
                min=1.0, max=60.0)]))])])])  # fmt: skip


def test_cumulative_histograms_become_timings_of_what_happened_since_the_last_export() -> None:
    intake = OtlpIntake(Aggregator(), started_ns=(T0 - 100) * 10**9)
    windows_after(intake, histogram_export([1, 0, 0, 0], 1.0))
    (window,) = windows_after(intake, histogram_export([1, 3, 1, 0], 76.0))
    assert (window.kind, window.count, window.sum) == (MetricKind.TIMING, 4, 75.0)
    assert window.sketch is not None
    assert window.sketch.quantile(0.5) == pytest.approx(15, rel=0.01)
    assert window.max == pytest.approx(30, rel=0.01)


def test_bad_names_and_summaries_are_counted_not_taken() -> None:
    intake = OtlpIntake(Aggregator(), started_ns=0)
    request = official_request()
    request.resource_metrics[0].scope_metrics[0].metrics.append(
        pb.Metric(name="bad name", gauge=pb.Gauge(data_points=[pb.NumberDataPoint(as_double=1)]))
    )
    windows = windows_after(intake, request)
    assert "bad name" not in {w.name for w in windows}
    assert (intake.stats.malformed, intake.stats.unsupported) == (1, 1)


def test_the_receiver_answers_as_a_collector_does() -> None:
    async def scenario() -> None:
        aggregator = Aggregator()
        receiver = await start_otlp_receiver(aggregator, SystemClock(), port=0)
        url = f"http://127.0.0.1:{receiver.port}/v1/metrics"
        body = official_request().SerializeToString()
        try:
            async with httpx.AsyncClient() as client:
                ok = await client.post(
                    url,
                    content=gzip.compress(body),
                    headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
                )
                again = await client.post(
                    url,
                    content=MessageToJson(official_request()),
                    headers={"content-type": "application/json"},
                )
                bad = await client.post(
                    url, content=body[:-3], headers={"content-type": "application/x-protobuf"}
                )
                wrong_type = await client.post(
                    url, content=body, headers={"content-type": "text/plain"}
                )
                elsewhere = await client.post(url.replace("metrics", "traces"), content=b"")
        finally:
            receiver.close()
        assert ok.status_code == 200
        partial = ExportMetricsServiceResponse.FromString(ok.content).partial_success
        assert partial.rejected_data_points == 1  # the summary
        assert again.status_code == 200
        assert again.json()["partialSuccess"]["rejectedDataPoints"] == "1"
        assert (bad.status_code, wrong_type.status_code, elsewhere.status_code) == (
            400, 415, 404)  # fmt: skip
        windows = aggregator.close_all(datetime.now(UTC))
        gauge = [w for w in windows if w.name == "queue.depth"]
        assert gauge and gauge[0].count == 2  # both accepted exports reached the windows

    asyncio.run(scenario())
