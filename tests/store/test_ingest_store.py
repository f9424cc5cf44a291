"""Batched ingest (server/services/ingest.py) on SQLite and PostgreSQL: messages submitted
together are stored in one transaction, each answered once stored; a refused one fails
alone; a full queue refuses at once; rollouts are woken once per device that moved on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgefleet.core.protocol import (
    ActiveRelease,
    NodeStatus,
    ReleaseStatus,
    Report,
    ReportAnswer,
    TelemetryAck,
    TelemetryBatchHeader,
)
from edgefleet.core.telemetry.wire import Batch, encode_batch
from edgefleet.core.updates.install import InstallState
from edgefleet.errors import Conflict, EdgefleetError, InvalidInput, Unavailable
from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.services.device_link import DeviceLinkService
from edgefleet.server.services.ingest import DeviceIngest, TelemetryUpload
from edgefleet.server.services.telemetry import TelemetryService
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database
from tests.fake_clock import FakeClock
from tests.store.test_telemetry_store import T0, T0_S, add_device, gauge


def ingest_for(db: Database, tmp_path: Path, woken: list[str], **limits: int) -> DeviceIngest:
    clock = FakeClock(T0)
    settings = ServerSettings(data_dir=tmp_path)
    telemetry = TelemetryService(db, clock, DesiredStateWatch(), ServerMetrics(), settings)
    link = DeviceLinkService(db, clock, settings)
    return DeviceIngest(db, clock, link, telemetry, woken.append, **limits)


def installed(serial: int) -> ReleaseStatus:
    return ReleaseStatus(name="m", version="1.0.0", serial=serial, state=InstallState.INSTALLED,
                         active=ActiveRelease(name="m", version="1.0.0"))  # fmt: skip


def test_messages_submitted_together_are_stored_in_one_batch_each_answered(
    db: Database, tmp_path: Path
) -> None:
    devices = [add_device(db, f"d-{i}") for i in range(6)]
    woken: list[str] = []
    ingest = ingest_for(db, tmp_path, woken)
    batch = encode_batch(Batch(1, (gauge(T0_S - 120, 10.0),)))

    async def run() -> list[object]:
        await ingest.start()
        try:
            messages = [
                *(ingest.submit(Report(applied_generation=d.desired_generation,
                                       release=installed(3), node=NodeStatus(address="h")), d)
                  for d in devices[:4]),
                # from the future: refused alone
                ingest.submit(Report(applied_generation=devices[4].desired_generation + 1),
                              devices[4]),
                ingest.submit(TelemetryUpload(TelemetryBatchHeader(), batch, T0_S), devices[5]),
                ingest.submit(TelemetryUpload(TelemetryBatchHeader(), batch, T0_S), devices[5]),
                ingest.submit(TelemetryUpload(TelemetryBatchHeader(), b"garbage", T0_S),
                              devices[5]),
            ]  # fmt: skip
            return await asyncio.gather(*messages, return_exceptions=True)
        finally:
            await ingest.stop()

    outcomes = asyncio.run(run())
    for answer, device in zip(outcomes[:4], devices, strict=False):
        assert answer == ReportAnswer(desired_generation=device.desired_generation,
                                      heartbeat_interval_s=device.heartbeat_interval_s)  # fmt: skip
    assert isinstance(outcomes[4], Conflict) and outcomes[4].code == "generation_ahead"
    assert outcomes[5] == TelemetryAck(acked_through_seq=1, stored_windows=1)
    assert isinstance(outcomes[6], Conflict) and outcomes[6].code == "duplicate_batch"
    assert isinstance(outcomes[7], InvalidInput) and outcomes[7].code == "corrupt_batch"
    assert (ingest.batches_written, ingest.items_written) == (1, 8)
    with db.read() as tx:
        for device in devices[:4]:
            assert tx.devices.get(device.id).release_status["serial"] == 3
            assert tx.node_health.find(device.id).address == "h"  # type: ignore[union-attr]
        assert tx.node_health.find(devices[4].id) is None
        assert tx.telemetry.cursor(devices[5].id).acked_through_seq == 1  # type: ignore[union-attr]
    assert sorted(woken) == sorted(d.id for d in devices[:4])  # once each: their install moved


def test_a_full_queue_refuses_at_once_and_a_stopped_ingest_takes_nothing(
    db: Database, tmp_path: Path
) -> None:
    device = add_device(db, "d-1")
    ingest = ingest_for(db, tmp_path, [], max_queued=1)
    report = Report(applied_generation=device.desired_generation)

    async def run() -> tuple[object, ...]:
        with pytest.raises(Unavailable, match="not taking"):
            await ingest.submit(report, device)
        await ingest.start()
        try:
            return tuple(await asyncio.gather(ingest.submit(report, device),
                                              ingest.submit(report, device),
                                              return_exceptions=True))  # fmt: skip
        finally:
            await ingest.stop()

    first, second = asyncio.run(run())
    assert isinstance(first, ReportAnswer)
    assert isinstance(second, EdgefleetError) and second.code == "ingest_busy"
