"""The agent's collector and uploader against a real on-disk queue.

The uploader talks to `LedgerServer`, a stand-in for the control plane's ingest endpoint
that applies the same core decision (core.telemetry_ingest) and the same wire decoding, so
the agent-side handling of every answer (ack, duplicate, gap, refusal, outage) is checked
without a network; tests/integration covers the real server.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgefleet.agent.release_service import service_spec
from edgefleet.agent.telemetry.collector import TelemetryCollector
from edgefleet.agent.telemetry.queue import TelemetryQueue
from edgefleet.agent.telemetry.uploader import TelemetryUploader
from edgefleet.core.protocol import TelemetryAck
from edgefleet.core.telemetry.ingest import (
    IngestCursor,
    IngestVerdict,
    advance_cursor,
    decide_ingest,
)
from edgefleet.core.telemetry.sampling import default_policy, policy_to_document
from edgefleet.core.telemetry.windows import MetricKind, MetricPoint, Window
from edgefleet.core.telemetry.wire import decode_batch, encode_batch
from edgefleet.core.updates.service_manifest import parse_service_manifest
from edgefleet.errors import ApiError, Unavailable

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def section(window_s: int, anomalous: list[str] | None = None) -> dict[str, Any]:
    document = policy_to_document(default_policy())
    document.update(min_window_s=1, upload_interval_s=5)
    for s in document["sets"]:
        s["window_s"] = window_s
    return {"policy": document, "anomalous_metrics": anomalous or []}


def gauge(name: str, value: float) -> MetricPoint:
    return MetricPoint(name, MetricKind.GAUGE, value)


def test_collector_follows_the_policy_and_cuts_batches(tmp_path: Path) -> None:
    with TelemetryQueue.in_data_dir(tmp_path) as queue:
        collector = TelemetryCollector(queue, sample_interval_s=10, batch_interval_s=60)
        assert collector.decision.window_s_for("host.cpu.percent") == 60
        collector.observe([gauge("host.cpu.percent", 10.0)], T0)
        # A policy from the control plane applies at once: the open 60 s window is cut.
        assert collector.apply_section(section(2), T0 + timedelta(seconds=1))
        assert collector.pending_windows == 1
        assert collector.batch_interval_s == 5 and collector.tick_s == 1
        for i in range(4):
            collector.observe([gauge("host.cpu.percent", 20.0 + i)], T0 + timedelta(seconds=2 + i))
        collector.close_due(T0 + timedelta(seconds=6))
        windows = [w.length_s for w in collector._pending]
        assert windows[0] == 1 and windows[1:] == [2, 2]  # the cut one, then 2 s windows
        assert not collector.cut_due(100.0)  # the first call starts the batch clock
        assert collector.cut_due(105.0)
        seq = collector.append(collector.take_batch(105.0))
        assert seq == 1 and queue.status().rows == 1
        # Finer for the metrics of an open alert: the divisor (4) over 60 s is 15 s.
        assert collector.apply_section(section(60, ["host.cpu.percent"]), T0)
        assert collector.decision.window_s_for("host.cpu.percent") == 15
        assert not collector.apply_section(section(60, ["host.cpu.percent"]), T0)
        assert not collector.apply_section({"policy": {"sets": "bad"}}, T0)  # kept


class LedgerServer:
    """Stores batches by the core's exactly-once rule; can be switched off or made to fail."""

    def __init__(self) -> None:
        self.cursor = IngestCursor()
        self.stored: list[int] = []
        self.down = False
        self.lose_answers = 0
        self.refuse_seqs: set[int] = set()

    async def upload_telemetry(self, payload: bytes, dropped_through_seq: int) -> TelemetryAck:
        if self.down:
            raise Unavailable("connection refused")
        batch = decode_batch(payload)
        if batch.seq in self.refuse_seqs:
            raise ApiError(400, "bad_batch_schema", "refused")
        decision = decide_ingest(self.cursor, batch.seq, dropped_through_seq)
        if decision.verdict is IngestVerdict.DUPLICATE:
            raise ApiError(409, "duplicate_batch", decision.reason)
        if decision.verdict is IngestVerdict.GAP:
            raise ApiError(409, "sequence_gap", decision.reason)
        assert decision.verdict is IngestVerdict.STORE, decision.reason
        self.cursor = advance_cursor(
            self.cursor, batch.seq, len(batch.windows), batch.dropped_batches_total,
            batch.dropped_windows_total, T0,
        )  # fmt: skip
        self.stored.append(batch.seq)
        if self.lose_answers:
            self.lose_answers -= 1
            raise Unavailable("timed out after the server stored it")
        return TelemetryAck(acked_through_seq=decision.acked_through_seq,
                            stored_windows=len(batch.windows))  # fmt: skip

    async def telemetry_cursor(self) -> dict[str, Any]:
        return {"acked_through_seq": self.cursor.acked_through_seq}


def window(i: int) -> Window:
    return Window(
        "host.cpu.percent",
        MetricKind.GAUGE,
        (),
        1_772_438_400 + 60 * i,
        60,
        6,
        60.0,
        5.0,
        20.0,
        10.0,
    )


def test_uploader_delivers_each_batch_once_through_outages_and_lost_answers(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        server = LedgerServer()
        with TelemetryQueue.in_data_dir(tmp_path, max_rows=4) as queue:
            uploader = TelemetryUploader(queue, server)
            for i in range(3):
                queue.append([window(i)])
            server.lose_answers = 1  # batch 1 is stored, its answer lost
            with pytest.raises(Unavailable):
                await uploader.upload_pending()
            assert queue.status().rows == 3
            assert await uploader.upload_pending() == 3  # 1 again: duplicate, resync, ack
            assert server.stored == [1, 2, 3] and queue.status().rows == 0
            server.down = True
            for i in range(3, 10):  # 7 batches into a queue of 4: 3 dropped
                queue.append([window(i)])
            with pytest.raises(Unavailable):
                await uploader.upload_pending()
            server.down = False
            server.refuse_seqs = {8}
            assert await uploader.upload_pending() == 3
            status = queue.status()
            assert status.dropped_batches_total == 3 and status.rows == 0
            assert server.stored == [1, 2, 3, 7, 9, 10]  # 4..6 dropped, 8 refused for good
            assert server.cursor.dropped_batches_total == 3
            assert uploader.refused_batches == 1

    asyncio.run(scenario())


def test_an_overflow_during_an_upload_never_counts_the_stored_batch_as_dropped(
    tmp_path: Path,
) -> None:
    """The queue fills while batch 1 is on its way: it is stored, so it is not a drop."""
    queue: TelemetryQueue

    class FillingServer(LedgerServer):
        async def upload_telemetry(self, payload: bytes, through: int) -> TelemetryAck:
            if decode_batch(payload).seq == 1:
                await asyncio.to_thread(queue.append, [window(2)])
            return await super().upload_telemetry(payload, through)

    async def scenario() -> None:
        server = FillingServer()
        with TelemetryQueue.in_data_dir(tmp_path, max_rows=2) as filling:
            nonlocal queue
            queue = filling
            uploader = TelemetryUploader(queue, server)
            queue.append([window(0)])
            queue.append([window(1)])
            assert await uploader.upload_pending() == 3
            assert server.stored == [1, 2, 3]
            assert queue.status().dropped_batches_total == 0
            assert server.cursor.dropped_batches_total == 0

    asyncio.run(scenario())


def test_a_server_restored_from_backup_is_told_what_is_gone(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = LedgerServer()
        with TelemetryQueue.in_data_dir(tmp_path) as queue:
            uploader = TelemetryUploader(queue, server)
            for i in range(3):
                queue.append([window(i)])
            await uploader.upload_pending()
            server.cursor = IngestCursor(acked_through_seq=1)  # lost batches 2 and 3
            queue.append([window(3)])
            assert await uploader.upload_pending() == 1
            assert server.stored == [1, 2, 3, 4]

    asyncio.run(scenario())


def test_encoded_batches_are_what_the_queue_sends(tmp_path: Path) -> None:
    with TelemetryQueue.in_data_dir(tmp_path) as queue:
        queue.append([window(0)])
        [pending] = queue.pending()
        assert decode_batch(pending.payload).windows == (window(0),)
        assert len(pending.payload) < len(encode_batch(decode_batch(pending.payload))) + 64


def test_the_release_service_is_told_where_the_agents_statsd_endpoint_is(tmp_path: Path) -> None:
    manifest = parse_service_manifest({"command": ["{python}", "-m", "app"], "port": 9000})
    slot = {"files": {"model": "m.onnx"}, "kinds": {"model": "onnx-model"}}
    logs = tmp_path / "logs"
    spec = service_spec(manifest, tmp_path / "slot", slot, logs, None, tmp_path / "state")
    assert "EDGEFLEET_STATSD" not in spec.env  # no endpoint (telemetry not started)
    explicit = service_spec(
        manifest, tmp_path / "slot", slot, logs, "127.0.0.1:40125", tmp_path / "state"
    )
    assert explicit.env["EDGEFLEET_STATSD"] == "127.0.0.1:40125"
    assert "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" not in explicit.env  # no OTLP endpoint


def test_the_release_service_is_told_where_the_agents_otlp_endpoint_is(tmp_path: Path) -> None:
    manifest = parse_service_manifest(
        {
            "command": ["{python}", "-m", "app"],
            "port": 9000,
            "env": {"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"},
        }
    )
    slot = {"files": {"model": "m.onnx"}, "kinds": {"model": "onnx-model"}}
    spec = service_spec(manifest, tmp_path / "slot", slot, tmp_path / "logs", None,
                        tmp_path / "state", "127.0.0.1:4318")  # fmt: skip
    assert spec.env["EDGEFLEET_OTLP"] == "http://127.0.0.1:4318"
    assert spec.env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] == "http://127.0.0.1:4318/v1/metrics"
    # What the release's own manifest sets wins.
    assert spec.env["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"] == "http/json"
