"""Device messages from the broker: who sent one, and remembering that it was taken.

A message is checked like a signed request (`security/message_signing.py`): the device is
known and approved, the signature by its enrolled key over the topic and payload, the
sequence number above the device's floor and unused — but not its timestamp, so a message
the broker held for a control plane that was down is taken when it comes back, however long
that was. Its sequence number is remembered only once the
message's work is done (`settle`, many messages in one transaction): a consumer killed between
the work and the settling gets the message again from the broker and does the work again,
which every device message tolerates (a report replaces the stored one; a telemetry batch
already stored is refused by its batch sequence). Remembering it first would lose it.

Both steps take messages in batches (`Batcher`): whatever arrives while one store round trip
runs goes into the next, so a burst of messages costs a few reads and writes, not one each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from edgefleet.clock import Clock
from edgefleet.core.device import Device
from edgefleet.core.enrollment import check_device_access
from edgefleet.errors import EdgefleetError, Unauthenticated
from edgefleet.security.message_signing import seq_of, verify_message
from edgefleet.security.request_signing import SignedRequest
from edgefleet.server.settings import ServerSettings
from edgefleet.store import Database

log = logging.getLogger(__name__)

MAX_BATCH = 512
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ArrivedMessage:
    """A device message as the broker delivered it: its signature, topic and payload."""

    signed: SignedRequest
    topic: str
    payload: bytes


class DeviceMessageService:
    def __init__(self, db: Database, clock: Clock, settings: ServerSettings) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings

    def authenticate(self, messages: Sequence[ArrivedMessage]) -> list[Device | EdgefleetError]:
        """Per message, the approved device that signed it on its own topic, or why not:
        Unauthenticated (bad_signature, stale_sequence, replayed_request, unknown_device) or
        DeviceNotApproved. One read of the store for all of them (devices, floors and used
        sequence numbers), then the signatures."""
        with self._db.read() as tx:
            devices = tx.devices.find_many(sorted({m.signed.device_id for m in messages}))
            floors = tx.nonces.floors(devices)
            pairs = [(m.signed.device_id, m.signed.nonce) for m in messages]
            used = tx.nonces.used_among([p for p in pairs if p[0] in devices])
        outcomes: list[Device | EdgefleetError] = []
        for m in messages:
            signed = m.signed
            try:
                device = devices.get(signed.device_id)
                if device is None:
                    raise Unauthenticated(f"unknown device {signed.device_id!r}",
                                          code="unknown_device")  # fmt: skip
                verify_message(signed, device.public_key, m.topic, m.payload)
                if seq_of(signed) <= floors.get(device.id, 0):
                    raise Unauthenticated("message sequence number below the device's window: "
                                          "replay refused", code="stale_sequence")  # fmt: skip
                if (device.id, signed.nonce) in used:
                    raise Unauthenticated("message sequence number already used: replay refused",
                                          code="replayed_request")  # fmt: skip
                check_device_access(device.enrollment)
            except EdgefleetError as e:
                outcomes.append(e)
            else:
                outcomes.append(device)
        return outcomes

    def authenticate_will(self, signed: SignedRequest, topic: str, payload: bytes) -> Device:
        """The approved device whose key signed this Will (on its own topic): the signature
        only, not the clock nor the nonce, since it was signed when the device connected
        (`services/presence.py` orders it by its sequence number instead)."""
        with self._db.read() as tx:
            device = tx.devices.find(signed.device_id)
        if device is None:
            raise Unauthenticated(f"unknown device {signed.device_id!r}", code="unknown_device")
        verify_message(signed, device.public_key, topic, payload)
        check_device_access(device.enrollment)
        return device

    def settle(self, messages: Sequence[SignedRequest]) -> list[Unauthenticated | None]:
        """Remember the messages' sequence numbers, for `max_clock_skew_s` from now (then the
        device's floor covers them: `NonceRepository.prune`), in one transaction; per message
        None, or Unauthenticated (replayed_request) when another consumer took the same
        message meanwhile."""
        expiry = self._clock.now() + timedelta(seconds=self._settings.max_clock_skew_s + 1)
        with self._db.transaction() as tx:
            new = tx.nonces.remember_many([(m.device_id, m.nonce) for m in messages], expiry)
        return [None if fresh else Unauthenticated(
            "message sequence number already used: replay refused", code="replayed_request")
            for fresh in new]  # fmt: skip


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    done: asyncio.Future[R]


class Batcher(Generic[T, R]):
    """Runs `work` over items in batches on a worker thread: whatever is submitted while one
    batch runs goes into the next (as a group commit does), so many messages cost one store
    round trip. `work` answers each item with its result or the error it raises for it."""

    def __init__(
        self, work: Callable[[list[T]], Sequence[R | BaseException]], max_batch: int = MAX_BATCH
    ) -> None:
        self._work = work
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Waiting[T, R]] = asyncio.Queue()

    async def submit(self, item: T) -> R:
        """The item's result once its batch ran; raises its error, or the batch's failure."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Waiting(item, done))
        return await done

    async def run_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                outcomes: Sequence[R | BaseException] = await asyncio.to_thread(
                    self._work, [waiting.item for waiting in batch]
                )
            except Exception as e:
                outcomes = [e] * len(batch)
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if waiting.done.done():
                    continue
                if isinstance(outcome, BaseException):
                    waiting.done.set_exception(outcome)
                else:
                    waiting.done.set_result(outcome)
