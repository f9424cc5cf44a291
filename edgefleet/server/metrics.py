"""The control plane's own metrics: counters and latency histograms kept in this process.

Services count what they do (telemetry batches accepted and refused, alerts opened and
closed, housekeeping runs); `HttpMetricsMiddleware` counts requests by method, route
template (never the raw path, so ids do not explode the label space) and status, and times
them. `/metrics` renders these together with fleet aggregates read from the store. Each
replica exposes its own counters; Prometheus sums them across replicas.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Mapping, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefleet.server.prometheus import MetricFamily

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

LabelValues = tuple[str, ...]


class Counter:
    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._values: dict[LabelValues, float] = {}
        self._lock = threading.Lock()

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        key = tuple(label_values)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *label_values: str) -> float:
        with self._lock:
            return self._values.get(tuple(label_values), 0.0)

    def family(self) -> MetricFamily:
        family = MetricFamily(self.name, "counter", self.help)
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labels:
            items = [((), 0.0)]
        for key, value in items:
            family.add(value, dict(zip(self.labels, key, strict=True)))
        return family


class Gauge:
    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._value = 0.0

    def set(self, value: float) -> None:
        self._value = value

    def family(self) -> MetricFamily:
        family = MetricFamily(self.name, "gauge", self.help)
        family.add(self._value)
        return family


class Histogram:
    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS_S,
    ) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self.buckets = tuple(buckets)
        # per label set: (count per bucket, non-cumulative; sum; count)
        self._series: dict[LabelValues, tuple[list[int], float, int]] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, *label_values: str) -> None:
        key = tuple(label_values)
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            counts, total, count = self._series.get(key, ([0] * len(self.buckets), 0.0, 0))
            if index < len(counts):
                counts[index] += 1
            self._series[key] = (counts, total + value, count + 1)

    def family(self) -> MetricFamily:
        family = MetricFamily(self.name, "histogram", self.help)
        with self._lock:
            items = sorted((k, (list(c), s, n)) for k, (c, s, n) in self._series.items())
        for key, (counts, total, count) in items:
            cumulative = []
            running = 0
            for n in counts:
                running += n
                cumulative.append(running)
            family.add_histogram(
                self.buckets, cumulative, total, count, dict(zip(self.labels, key, strict=True))
            )
        return family


class ServerMetrics:
    """Every in-process metric of the control plane."""

    def __init__(self) -> None:
        self.started_at_s = time.time()
        self.http_requests = Counter(
            "edgefleet_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
        )
        self.http_duration = Histogram(
            "edgefleet_http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route template.",
            ("method", "route"),
        )
        self.batches_accepted = Counter(
            "edgefleet_telemetry_batches_accepted_total",
            "Telemetry batches stored (each device sequence number once).",
        )
        self.batches_refused = Counter(
            "edgefleet_telemetry_batches_refused_total",
            "Telemetry batches refused, by error code (duplicate_batch, corrupt_batch, ...).",
            ("code",),
        )
        self.windows_accepted = Counter(
            "edgefleet_telemetry_windows_accepted_total",
            "Telemetry windows stored from accepted batches.",
        )
        self.batch_bytes = Counter(
            "edgefleet_telemetry_received_bytes_total",
            "Compressed bytes of telemetry batches received (accepted or not).",
        )
        self.alerts_opened = Counter(
            "edgefleet_alerts_opened_total", "Alerts opened, by kind.", ("kind",)
        )
        self.alerts_closed = Counter(
            "edgefleet_alerts_closed_total", "Alerts closed, by kind.", ("kind",)
        )
        self.housekeeping_runs = Counter(
            "edgefleet_housekeeping_runs_total",
            "Background housekeeping job runs, by job and result (ok, error).",
            ("job", "result"),
        )
        self.otlp_exported_windows = Counter(
            "edgefleet_otlp_exported_windows_total",
            "Telemetry windows exported to the OTLP collector (one data point each).",
        )
        self.otlp_dropped_windows = Counter(
            "edgefleet_otlp_dropped_windows_total",
            "Telemetry windows not exported, by reason: queue_full (the export queue was "
            "full), rejected (the collector refused them).",
            ("reason",),
        )
        for reason in ("queue_full", "rejected"):
            self.otlp_dropped_windows.inc(reason, amount=0)
        self.otlp_export_requests = Counter(
            "edgefleet_otlp_export_requests_total",
            "OTLP export requests, by result: ok, retry (sent again later), rejected.",
            ("result",),
        )
        self.otlp_queued_windows = Gauge(
            "edgefleet_otlp_queued_windows", "Telemetry windows waiting to be exported."
        )
        self.long_polls_waiting = Gauge(
            "edgefleet_long_polls_waiting", "Desired-state long polls waiting on this replica."
        )
        self.desired_notifications = Counter(
            "edgefleet_desired_notifications_total",
            "Desired-state change notifications heard from PostgreSQL (any replica's "
            "writes), by result: woke (long polls of the device were woken), idle (none "
            "was waiting for that generation).",
            ("result",),
        )

        self.reports_ingested = Counter(
            "edgefleet_reports_ingested_total",
            "Device reports stored, by transport (http, mqtt).",
            ("transport",),
        )
        self.messages_dropped = Counter(
            "edgefleet_messages_dropped_total",
            "Device messages from the MQTT broker dropped, by reason: malformed, oversized, "
            "unknown_topic, unsigned_request, bad_signature, stale_sequence, replayed_request, "
            "unknown_device, device_revoked, stale_presence, ... (a telemetry batch's "
            "refusal code).",
            ("reason",),
        )
        self.presence_taken = Counter(
            "edgefleet_presence_taken_total",
            "Presence messages of devices on the MQTT channel taken, by state: online (the "
            "device connected), offline (its Last Will: the connection ended unannounced).",
            ("state",),
        )

    def families(self) -> list[MetricFamily]:
        counters: list[Counter | Gauge] = [
            self.http_requests, self.batches_accepted, self.batches_refused,
            self.windows_accepted, self.batch_bytes, self.alerts_opened, self.alerts_closed,
            self.housekeeping_runs, self.otlp_exported_windows, self.otlp_dropped_windows,
            self.otlp_export_requests, self.otlp_queued_windows, self.long_polls_waiting,
            self.desired_notifications, self.reports_ingested, self.messages_dropped,
            self.presence_taken,
        ]  # fmt: skip
        return [*(c.family() for c in counters), self.http_duration.family()]


UNMATCHED_ROUTE = "unmatched"


class HttpMetricsMiddleware:
    """Counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = _route_of(scope)
            method = str(scope.get("method", "?"))
            self.metrics.http_requests.inc(method, route, str(status))
            self.metrics.http_duration.observe(time.perf_counter() - started, method, route)


def _route_of(scope: Mapping[str, object]) -> str:
    # The router records the matched route in the scope (FastAPI's APIRoute sets it).
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE
