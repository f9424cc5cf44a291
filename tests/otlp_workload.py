"""A workload instrumented with the OpenTelemetry SDK and nothing else: it records what an
inference server would (a request counter, a latency histogram, a queue gauge) and exports
them over OTLP/HTTP wherever OTEL_EXPORTER_OTLP_METRICS_ENDPOINT points, every
OTEL_METRIC_EXPORT_INTERVAL ms, as any such service configured from its environment does.

    python -m tests.otlp_workload REQUESTS
"""

from __future__ import annotations

import sys
import time

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader


def main(requests: int) -> None:
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("model-server", "1.0")
    served = meter.create_counter("inference.requests")
    latency = meter.create_histogram("inference.latency_ms", unit="ms")

    def queue_depth(_options: CallbackOptions) -> list[Observation]:
        return [Observation(3, {"queue": "main"})]

    meter.create_observable_gauge("inference.queue_depth", [queue_depth])
    for i in range(1, requests + 1):
        served.add(1, {"model": "v1"})
        latency.record(float(i), {"model": "v1"})
        time.sleep(0.005)
    provider.shutdown()  # exports what is left


if __name__ == "__main__":
    main(int(sys.argv[1]))
