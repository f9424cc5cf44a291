"""Device messages from the broker: who sent one, and remembering that it was taken.

A message is checked like a signed request (`security/message_signing.py`): the device is
known and approved, the timestamp fresh, the signature by its enrolled key over the topic
and payload, the sequence number unused. Its sequence number is remembered only once the
message's work is done (`settle`, many messages in one transaction): a consumer killed between
the work and the settling gets the message again from the broker and does the work again,
which every device message tolerates (a report replaces the stored one; a telemetry batch
already stored is refused by its batch sequence). Remembering it first would lose it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edgefleet.clock import Clock
from edgefleet.core.device import Device
from edgefleet.core.enrollment import check_device_access
from edgefleet.errors import Unauthenticated
from edgefleet.security.message_signing import METHOD
from edgefleet.security.request_signing import SignedRequest, check_fresh, verify_signed_request
from edgefleet.server.settings import ServerSettings
from edgefleet.store import Database

log = logging.getLogger(__name__)

MAX_SETTLE_BATCH = 512


class DeviceMessageService:
    def __init__(self, db: Database, clock: Clock, settings: ServerSettings) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings

    def authenticate(self, signed: SignedRequest, topic: str, payload: bytes) -> Device:
        """The approved device that signed this message on its own topic; Unauthenticated
        (bad_signature, stale_request, replayed_request, unknown_device) or
        DeviceNotApproved otherwise."""
        now = self._clock.now()
        check_fresh(signed, now, self._settings.max_clock_skew_s)
        with self._db.read() as tx:
            device = tx.devices.find(signed.device_id)
            replayed = device is not None and tx.nonces.used(device.id, signed.nonce)
        if device is None:
            raise Unauthenticated(f"unknown device {signed.device_id!r}", code="unknown_device")
        verify_signed_request(signed, device.public_key, METHOD, topic, payload, now,
                              self._settings.max_clock_skew_s)  # fmt: skip
        if replayed:
            raise Unauthenticated("message sequence number already used: replay refused",
                                  code="replayed_request")  # fmt: skip
        check_device_access(device.enrollment)
        return device

    def settle(self, messages: Sequence[SignedRequest]) -> list[Unauthenticated | None]:
        """Remember the messages' sequence numbers, each until its timestamp could no longer
        pass the skew check, in one transaction; per message None, or Unauthenticated
        (replayed_request) when another consumer took the same message meanwhile."""
        outcomes: list[Unauthenticated | None] = []
        with self._db.transaction() as tx:
            for signed in messages:
                try:
                    with tx.connection.begin_nested():
                        tx.nonces.remember(signed.device_id, signed.nonce, self._expiry(signed))
                except Unauthenticated as e:
                    outcomes.append(e)
                else:
                    outcomes.append(None)
        return outcomes

    def _expiry(self, signed: SignedRequest) -> datetime:
        moment = datetime.fromtimestamp(signed.timestamp, UTC)
        return moment + timedelta(seconds=self._settings.max_clock_skew_s + 1)


@dataclass
class _Settling:
    signed: SignedRequest
    done: asyncio.Future[None]


class MessageSettler:
    """Settles messages in batches: whatever arrived while one transaction was written goes
    into the next (group commit), so many messages cost one write."""

    def __init__(self, messages: DeviceMessageService) -> None:
        self._messages = messages
        self._queue: asyncio.Queue[_Settling] = asyncio.Queue()

    async def settle(self, signed: SignedRequest) -> None:
        """Return once the message is remembered; raises what `DeviceMessageService.settle`
        said of it, or the store's failure."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Settling(signed, done))
        await done

    async def run_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_SETTLE_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                outcomes: Sequence[BaseException | None] = await asyncio.to_thread(
                    self._messages.settle, [item.signed for item in batch]
                )
            except Exception as e:
                outcomes = [e] * len(batch)
            for item, outcome in zip(batch, outcomes, strict=True):
                if item.done.done():
                    continue
                if outcome is None:
                    item.done.set_result(None)
                else:
                    item.done.set_exception(outcome)
