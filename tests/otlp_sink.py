"""A stand-in OTLP collector for tests: an HTTP server on loopback that decodes every
`POST /v1/metrics` with the official schema (opentelemetry-proto) and keeps what it got,
answering 503 to the first `fail_first` requests (or to all while `failing` is set)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)


@dataclass
class OtlpSink:
    fail_first: int = 0
    failing: bool = False
    requests: list[ExportMetricsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    refused: int = 0
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def points(self) -> list[tuple[dict[str, str], str, Any]]:
        """(resource attributes, metric name, data point) of everything received."""
        found = []
        with self.lock:
            requests = list(self.requests)
        for request in requests:
            for resource_metrics in request.resource_metrics:
                resource = {
                    kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes
                }
                for scope in resource_metrics.scope_metrics:
                    for metric in scope.metrics:
                        data = getattr(metric, metric.WhichOneof("data"))
                        found += [(resource, metric.name, p) for p in data.data_points]
        return found


@contextmanager
def running_sink(sink: OtlpSink) -> Iterator[OtlpSink]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with sink.lock:
                refuse = sink.failing or sink.refused < sink.fail_first
                if refuse:
                    sink.refused += 1
                else:
                    sink.requests.append(ExportMetricsServiceRequest.FromString(body))
                    sink.headers.append({k.lower(): v for k, v in self.headers.items()})
            answer = b"" if refuse else ExportMetricsServiceResponse().SerializeToString()
            self.send_response(503 if refuse else 200 if self.path == "/v1/metrics" else 404)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
