"""The agent's telemetry uploader: drains the on-disk queue to the control plane in order.

Each pending batch is POSTed as it sits in the queue (its wire bytes), oldest first, with
`dropped_through_seq`: every sequence up to there that the server lacks is gone from the
device (dropped on overflow, or acknowledged before). The answer acknowledges the highest
contiguous sequence the server holds, and the queue forgets everything up to it. So:

- a batch whose answer was lost is sent again; the server refuses it as `duplicate_batch`
  (409), the uploader asks for the server's cursor and acknowledges up to it;
- a `sequence_gap` (409: the server waits for a batch the device no longer has) is answered
  by declaring everything before the batch as gone;
- a batch the server can never accept (400, 413: corrupt or unreadable) is dropped locally
  with an error in the log, so one bad batch cannot block the queue;
- the server unreachable or failing (Unavailable, 5xx), or refusing the device (401, 403):
  the pass stops and the caller backs off; nothing is lost, the queue keeps the batches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from edgefleet.agent.telemetry.queue import QueuedBatch, TelemetryQueue
from edgefleet.core.protocol import TelemetryAck
from edgefleet.errors import ApiError, InvalidInput

log = logging.getLogger(__name__)

PASS_BATCHES = 50
PASS_BYTES = 1 << 20
_RESYNC_CODES = {"duplicate_batch", "sequence_gap", "concurrent_upload"}


class TelemetryLink(Protocol):
    async def upload_telemetry(self, payload: bytes, dropped_through_seq: int) -> TelemetryAck: ...

    async def telemetry_cursor(self) -> dict[str, Any]: ...


class TelemetryUploader:
    def __init__(self, queue: TelemetryQueue, link: TelemetryLink) -> None:
        self._queue = queue
        self._link = link
        self.uploaded_batches = 0
        self.refused_batches = 0

    async def upload_pending(self) -> int:
        """Send every pending batch in order; return how many were acknowledged. Raises
        Unavailable or ApiError when the pass must stop (the caller backs off)."""
        sent = 0
        while True:
            batches = await asyncio.to_thread(self._queue.pending, PASS_BATCHES, PASS_BYTES)
            if not batches:
                return sent
            for batch in batches:
                if await self._upload(batch):
                    sent += 1

    async def _declared_through(self, batch: QueuedBatch) -> int | None:
        """What to declare gone with `batch`, or None if the batch itself was dropped."""
        status = await asyncio.to_thread(self._queue.status)
        declared = max(status.dropped_through_seq, status.acked_through_seq)
        return None if declared >= batch.seq else declared

    async def _upload(self, batch: QueuedBatch) -> bool:
        # In flight from before the check: an overflow may evict it until then, not after
        # (a batch the server stores must not also be counted as dropped).
        try:
            with self._queue.sending(batch.seq):
                declared = await self._declared_through(batch)
                if declared is None:
                    return False  # evicted by an overflow while we were sending earlier ones
                answer = await self._link.upload_telemetry(batch.payload, declared)
            acked = answer.acked_through_seq
        except ApiError as e:
            if e.code in _RESYNC_CODES:
                acked = await self._resync(batch, e)
            elif e.status in (400, 413):
                log.error(
                    "telemetry batch refused for good; dropping it",
                    extra={"seq": batch.seq, "code": e.code, "error": e.message},
                )
                self.refused_batches += 1
                await self._ack(batch.seq)
                return False
            else:
                raise
        await self._ack(acked)
        if acked >= batch.seq:
            self.uploaded_batches += 1
            return True
        return False

    async def _resync(self, batch: QueuedBatch, error: ApiError) -> int:
        cursor = await self._link.telemetry_cursor()
        acked = int(cursor["acked_through_seq"])
        if acked >= batch.seq or error.code != "sequence_gap":
            if acked < batch.seq:
                raise error  # a race with another upload: back off and try again
            return acked
        # The server waits for batches this device no longer holds (e.g. its store was
        # restored from a backup): they cannot come, so say so.
        log.warning(
            "telemetry server expects batches the device no longer has; skipping",
            extra={"seq": batch.seq, "server_acked_through_seq": acked},
        )
        answer = await self._link.upload_telemetry(batch.payload, batch.seq - 1)
        return answer.acked_through_seq

    async def _ack(self, acked_through_seq: int) -> None:
        try:
            await asyncio.to_thread(self._queue.ack, acked_through_seq)
        except InvalidInput as e:
            # The server claims batches this queue never produced: its cursor belongs to
            # an earlier life of this device id. Nothing here can fix that; say so loudly.
            log.error(
                "telemetry acknowledgement beyond what was sent",
                extra={"acked_through_seq": acked_through_seq, "error": e.message},
            )
            raise
