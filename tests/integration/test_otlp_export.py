"""The control plane exports the telemetry windows it stores to an OTLP collector: a real
server and a real agent, and a sink that decodes each request with the official schema.
Series, values, window times and resource attributes arrive as stored, with the configured
headers, after the collector's refusals are retried; a collector that never answers costs
only what overflows the export queue (counted on /metrics), never an upload."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgefleet.client import FleetClient
from edgefleet.core.telemetry.windows import MetricKind, Window
from edgefleet.core.telemetry.wire import Batch, encode_batch
from edgefleet.localfleet import ServerProcess, wait_for
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.device_requests import RawDevice
from tests.integration.test_telemetry import post
from tests.otlp_sink import OtlpSink, running_sink
from tests.telemetry_fleet import fast_policy, send_lines, start_agent, statsd_port

NANOS = 10**9


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with running_sink(OtlpSink(fail_first=2)) as running:
        yield running


@contextmanager
def exporting_server(data_dir: Path, sink: OtlpSink, **env: str) -> Iterator[ServerProcess]:
    process = ServerProcess(
        data_dir,
        ADMIN_TOKEN,
        env={
            "EDGEFLEET_OTLP_ENDPOINT": sink.url,
            "EDGEFLEET_OTLP_HEADERS": "authorization=Bearer sink-secret,x-scope=edge",
            **env,
        },
    )
    process.start()
    try:
        with process.client() as client:
            client.set_telemetry_policy(fast_policy())
        yield process
    finally:
        process.stop()


def metric_value(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not on /metrics"
    return float(match.group(1))


def test_stored_windows_reach_the_collector_with_their_device(
    tmp_path: Path, sink: OtlpSink
) -> None:
    with exporting_server(tmp_path / "cp", sink) as server, server.client() as admin:
        agents = AgentFactory(server, tmp_path)
        try:
            check_export(admin, agents, sink)
        finally:
            for agent in agents.agents:
                agent.stop()


def check_export(admin: FleetClient, agents: AgentFactory, sink: OtlpSink) -> None:
    agent = start_agent(agents, admin, "export-cam", ["--label", "site=berlin"])
    lines = [f"inference.latency_ms:{v}|ms|#model:v1" for v in range(1, 101)]
    lines += ["inference.requests:1|c|#model:v1"] * 100
    lines += ["inference.queue_depth:25|g", "inference.queue_depth:24|g"]
    send_lines(statsd_port(agent), lines)

    def exported(name: str, total: float) -> list:
        points = [p for _, n, p in sink.points() if n == name]
        value = sum(getattr(p, "sum", 0) or getattr(p, "as_double", 0) for p in points)
        return points if value == total else []

    latency = wait_for(lambda: exported("inference.latency_ms", 5050), timeout_s=40,
                       what="the timings at the collector")  # fmt: skip
    assert sum(p.count for p in latency) == 100
    requests = wait_for(lambda: exported("inference.requests", 100), timeout_s=20,
                        what="the request counts at the collector")  # fmt: skip
    stored = admin.telemetry_query("inference.requests", device=agent.name, since="10m",
                                   step="1")  # fmt: skip
    stored_starts = {p["start_s"] for p in stored["series"][0]["points"]}
    for point in requests:
        assert [(a.key, a.value.string_value) for a in point.attributes] == [("model", "v1")]
        length_ns = point.time_unix_nano - point.start_time_unix_nano
        assert length_ns == 2 * NANOS and point.start_time_unix_nano % (2 * NANOS) == 0
        assert point.start_time_unix_nano // NANOS in stored_starts
    depth = [p for _, n, p in sink.points() if n == "inference.queue_depth"]
    assert depth and depth[-1].as_double == 24

    resources = {tuple(sorted(r.items())) for r, n, _ in sink.points()
                 if n.startswith("inference.")}  # fmt: skip
    (resource,) = resources
    attributes = dict(resource)
    assert attributes["device.id"] == agent.device_id
    assert attributes["edgefleet.device.name"] == "export-cam"
    assert attributes["service.name"] == "edgefleet-device"
    assert attributes["edgefleet.label.site"] == "berlin"
    assert {h["authorization"] for h in sink.headers} == {"Bearer sink-secret"}
    assert sink.refused == 2  # answered 503, sent again
    text = admin.prometheus_metrics()
    assert metric_value(text, "edgefleet_otlp_export_requests_total", '{result="retry"}') >= 2
    assert metric_value(text, "edgefleet_otlp_exported_windows_total") >= len(requests)


def window(start_s: int, series: int) -> Window:
    return Window(f"host.disk{series}.percent", MetricKind.GAUGE, (), start_s, 10, 1, 5.0, 5.0,
                  5.0, 5.0)  # fmt: skip


def test_a_collector_that_never_takes_anything_never_blocks_ingest(tmp_path: Path) -> None:
    with running_sink(OtlpSink(failing=True)) as sink:
        with exporting_server(tmp_path / "cp", sink, EDGEFLEET_OTLP_QUEUE_MAX_WINDOWS="100") \
                as server, server.client() as admin:  # fmt: skip
            device = RawDevice(server.url)
            device.enroll(admin.create_enrollment_token(auto_approve=True)["token"],
                          name="raw-cam")  # fmt: skip
            start_s = 1_795_000_000
            for seq in range(1, 6):  # 5 batches of 60 windows: the queue holds one
                windows = tuple(window(start_s + 10 * seq, i) for i in range(60))
                status, _, answer = post(device, encode_batch(Batch(seq, windows)))
                assert (status, answer["acked_through_seq"]) == (200, seq)
            text = wait_for(lambda: admin.prometheus_metrics() if metric_value(
                admin.prometheus_metrics(), "edgefleet_otlp_export_requests_total",
                '{result="retry"}') >= 1 else None, what="a retry")  # fmt: skip
            assert text is not None
            dropped = metric_value(text, "edgefleet_otlp_dropped_windows_total",
                                   '{reason="queue_full"}')  # fmt: skip
            queued = metric_value(text, "edgefleet_otlp_queued_windows")
            # One batch is in flight (retried), at most one more fits the queue: the rest
            # was dropped whole and counted.
            assert dropped >= 3 * 60 and dropped + queued == 4 * 60
            assert metric_value(text, "edgefleet_telemetry_batches_accepted_total") == 5
        assert sink.requests == [] and sink.refused >= 1
