"""Batched ingest: device reports and telemetry batches, from any transport, stored together.

    transport ──submit(message, device)──▶ bounded queue ──▶ writer task
                                                              │ up to MAX_BATCH items,
                                                              │ waiting at most LINGER_S
                                                              ▼
                              one transaction; each item in a savepoint of its own
                                                              │ commit
                                                              ▼
                             each submitter's future resolved; controllers woken once

A submitter is answered only after the transaction that holds its item committed, so a
device that got an answer has its message stored. An item that is refused (a report from
the future, a duplicate telemetry batch) rolls back its own savepoint only; the others in
the batch are stored. A store failure fails every item of the batch (the devices retry).
When the queue is full, `submit` raises Unavailable at once (HTTP 503 with Retry-After,
MQTT: the message is not acknowledged and comes again).

The writer starts a batch as soon as it is idle: alone, an item waits for nothing; under
load, the items that arrived during one write go into the next (group commit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

from edgefleet.clock import Clock
from edgefleet.core.device import Device
from edgefleet.core.protocol import Report, ReportAnswer, TelemetryAck, TelemetryBatchHeader
from edgefleet.core.telemetry.wire import Batch
from edgefleet.errors import EdgefleetError, Unavailable
from edgefleet.server.services.device_link import DeviceLinkService
from edgefleet.server.services.telemetry import StoredBatch, TelemetryService
from edgefleet.store import Database, Transaction

log = logging.getLogger(__name__)

MAX_QUEUED = 4096
MAX_BATCH = 256
LINGER_S = 0.005  # how long a started batch waits for more items
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class TelemetryUpload:
    """One telemetry batch as a transport received it: its header, its (unsealed) wire
    bytes, and the device's signed timestamp (its clock, for core.telemetry.clock)."""

    header: TelemetryBatchHeader
    body: bytes
    signed_at_s: int


Message = Report | TelemetryUpload
Answer = ReportAnswer | TelemetryAck


@dataclass
class _Item:
    message: Message
    device: Device
    future: asyncio.Future[Answer]


class DeviceIngest:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        device_link: DeviceLinkService,
        telemetry: TelemetryService,
        wake_rollouts: Callable[[str], None],
        *,
        max_queued: int = MAX_QUEUED,
        max_batch: int = MAX_BATCH,
        linger_s: float = LINGER_S,
    ) -> None:
        self._db = db
        self._clock = clock
        self._device_link = device_link
        self._telemetry = telemetry
        self._wake_rollouts = wake_rollouts
        self._max_queued = max_queued
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._queue: asyncio.Queue[_Item] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.batches_written = 0  # for tests and metrics: how the items were grouped
        self.items_written = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue(self._max_queued)
        self._writer = asyncio.create_task(self._write_forever())

    async def stop(self) -> None:
        """Store what is queued, then stop."""
        if self._writer is None or self._queue is None:
            return
        writer, self._writer = self._writer, None
        await self._queue.join()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)

    @overload
    async def submit(self, message: Report, device: Device) -> ReportAnswer: ...

    @overload
    async def submit(self, message: TelemetryUpload, device: Device) -> TelemetryAck: ...

    async def submit(self, message: Message, device: Device) -> Answer:
        """Store `message` from the authenticated `device`; its answer once it is durably
        stored. Raises what refused it (the error tree), Unavailable when the queue is
        full or the ingest is not running."""
        if self._queue is None or self._writer is None:
            raise Unavailable("the control plane is not taking device messages now",
                              code="ingest_stopped")  # fmt: skip
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(message, device, future))
        except asyncio.QueueFull:
            raise Unavailable(
                f"the control plane's ingest queue is full ({self._max_queued}); retry in "
                f"{RETRY_AFTER_S} s",
                code="ingest_busy",
            ) from None
        return await future

    async def _write_forever(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            if self._linger_s > 0 and queue.empty():
                await asyncio.sleep(self._linger_s)
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                outcomes = await asyncio.to_thread(self._store, batch)
            except Exception as e:  # the store failed: every item of the batch did
                if not isinstance(e, EdgefleetError):
                    log.exception("ingest batch failed", extra={"items": len(batch)})
                outcomes = [e] * len(batch)
            for item, outcome in zip(batch, outcomes, strict=True):
                if not item.future.done():
                    if isinstance(outcome, BaseException):
                        item.future.set_exception(outcome)
                    else:
                        item.future.set_result(outcome)
                queue.task_done()

    def _store(self, batch: Sequence[_Item]) -> list[Any]:
        """One transaction for `batch` (on a worker thread); each item's answer or error."""
        decoded = [self._decode(item.message) for item in batch]  # outside the transaction
        now = self._clock.now()
        outcomes: list[Any] = []
        stored: list[StoredBatch] = []
        woken: set[str] = set()
        with self._db.transaction() as tx:
            for item, batch_or_error in zip(batch, decoded, strict=True):
                if isinstance(batch_or_error, EdgefleetError):
                    outcomes.append(batch_or_error)
                    continue
                outcome: Answer | EdgefleetError
                try:
                    with tx.connection.begin_nested():
                        outcome = self._store_one(tx, item, batch_or_error, now, stored, woken)
                except EdgefleetError as e:
                    outcome = e
                outcomes.append(outcome)
        self.batches_written += 1
        self.items_written += len(batch)
        for done in stored:
            self._telemetry.after_stored(done)
        for device_id in sorted(woken):
            self._wake_rollouts(device_id)  # an install moved on: its rollout may too
        return outcomes

    def _decode(self, message: Message) -> Batch | EdgefleetError | None:
        if not isinstance(message, TelemetryUpload):
            return None
        try:
            return self._telemetry.decode(message.body)
        except EdgefleetError as e:
            return e

    def _store_one(
        self,
        tx: Transaction,
        item: _Item,
        batch: Batch | None,
        now: datetime,
        stored: list[StoredBatch],
        woken: set[str],
    ) -> Answer:
        message, device = item.message, item.device
        if isinstance(message, Report):
            answer, moved = self._device_link.store_report(tx, device, message, now)
            if moved:
                woken.add(device.id)
            return answer
        assert batch is not None
        done = self._telemetry.store_batch(tx, device, batch,
                                           message.header.dropped_through_seq,
                                           message.signed_at_s, now)  # fmt: skip
        stored.append(done)
        return TelemetryAck(
            acked_through_seq=done.result.acked_through_seq,
            stored_windows=done.result.stored_windows,
        )
