"""Sealing the agent's telemetry batches to the control plane's ingest key.

The desired state's `telemetry.sealing` (`{"key_id", "public_key"}`, present while the
fleet's sealing policy is on, signed with the rest of the document) names the key; every
batch uploaded while it is there is sealed (`security/sealing.py`, through libcrypto) and
sent as `application/x-edgefleet-telemetry-sealed`, so what passes between the device and
the control plane (a relay, a broker, a proxy) carries no metric name or value. Batches stay
plaintext in the device's own queue; sealing happens at each upload, to the key then in
force. With `--seal-telemetry` the agent never uploads a plaintext batch: while no key is
named, batches wait in the queue.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from typing import Any

from edgefleet.agent.link import SEALED_TELEMETRY_CONTENT_TYPE, ControlPlaneLink
from edgefleet.core.protocol import TelemetryAck
from edgefleet.errors import Unavailable
from edgefleet.security.sealing import key_id_of, seal

log = logging.getLogger(__name__)


class SealingTelemetryLink:
    """The uploader's `TelemetryLink`: the control-plane link, sealing while a key is set."""

    def __init__(self, link: ControlPlaneLink, required: bool = False) -> None:
        """`required`: upload nothing until the desired state names a key (the batches
        wait in the queue), never a plaintext batch."""
        self._link = link
        self._required = required
        self.public_key: bytes | None = None

    def use(self, sealing: Mapping[str, Any] | None) -> bool:
        """Follow the desired state's `telemetry.sealing` (None: send plaintext); True when
        batches held back for want of a key may go now."""
        if sealing is None:
            self.public_key = None
            return False
        try:
            public_key = base64.b64decode(str(sealing["public_key"]), validate=True)
            stated_id = bytes.fromhex(str(sealing["key_id"]))
        except (KeyError, binascii.Error, ValueError):
            log.warning("ignoring a malformed telemetry sealing key",
                        extra={"device_id": self._link.device_id})  # fmt: skip
            return False
        if len(public_key) != 32 or key_id_of(public_key) != stated_id:
            log.warning("ignoring a telemetry sealing key whose id does not match it",
                        extra={"device_id": self._link.device_id})  # fmt: skip
            return False
        held_back = self._required and self.public_key is None
        self.public_key = public_key
        return held_back

    async def upload_telemetry(self, payload: bytes, dropped_through_seq: int) -> TelemetryAck:
        if self.public_key is None:
            if self._required:
                raise Unavailable(
                    "telemetry is sealed only (--seal-telemetry) and the desired state "
                    "names no ingest key yet: batches wait"
                )
            return await self._link.upload_telemetry(payload, dropped_through_seq)
        sealed = seal(self.public_key, self._link.device_id, payload)
        return await self._link.upload_telemetry(
            sealed, dropped_through_seq, content_type=SEALED_TELEMETRY_CONTENT_TYPE
        )

    async def telemetry_cursor(self) -> dict[str, Any]:
        return await self._link.telemetry_cursor()
