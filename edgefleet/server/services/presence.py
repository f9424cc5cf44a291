"""Presence on the MQTT channel: a device's `online` message (sent when it connects) and its
Last Will (`offline`, published by the broker when the connection ends without a goodbye:
a crash, a cut link, a missed keep-alive).

Taking one is one transaction: load the device → `core.presence.observe_presence` (newer
than the last presence taken, else refused as `stale_presence`) → save it, which re-renders
its desired state (online and hosting nothing: the idle heartbeat interval
`mqtt_idle_heartbeat_s`; offline: its own interval again) → on a Will, the node's liveness
takes `core.workloads.liveness.observe_will` (dead at once when it hosts nothing, suspect
when it hosts replicas: failover's grace and fencing rules apply as for any silent node).

Who sent the message is checked before (`DeviceMessageService`): the online message like
any device message; the Will by its signature and device only, since it was signed when
the device connected and its timestamp is old when it fires (its sequence number orders it
instead, here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from edgefleet.clock import Clock
from edgefleet.core.presence import PresenceState, observe_presence
from edgefleet.core.workloads.liveness import observe_will
from edgefleet.errors import Conflict, Unauthenticated
from edgefleet.server.services.desired import save_device
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database, Transaction

log = logging.getLogger(__name__)

ATTEMPTS = 5  # a concurrent change of the device record is retried


@dataclass(frozen=True)
class PresenceTaken:
    device_id: str
    state: PresenceState
    liveness: str | None  # the node's verdict after a Will; None when it has no node record


class PresenceService:
    def __init__(
        self, db: Database, clock: Clock, settings: ServerSettings, watch: DesiredStateWatch
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._watch = watch

    def take(self, device_id: str, state: PresenceState, seq: int) -> PresenceTaken:
        """Record a presence message of `device_id` with sequence number `seq`;
        Unauthenticated (`stale_presence`) when a newer one was taken already."""
        for attempt in range(ATTEMPTS):
            try:
                with self._db.transaction() as tx:
                    taken = self._take(tx, device_id, state, seq)
                break
            except Conflict as e:
                if e.code != "concurrent_update" or attempt == ATTEMPTS - 1:
                    raise
        self._watch.notify(device_id)
        log.info("device presence", extra={"device_id": device_id, "presence": state.value,
                                           "seq": seq, "liveness": taken.liveness})  # fmt: skip
        return taken

    def _take(
        self, tx: Transaction, device_id: str, state: PresenceState, seq: int
    ) -> PresenceTaken:
        now = self._clock.now()
        device = tx.devices.find(device_id)
        if device is None:
            raise Unauthenticated(f"unknown device {device_id!r}", code="unknown_device")
        decision = observe_presence(device.presence, state, seq, now,
                                    self._settings.mqtt_idle_heartbeat_s)  # fmt: skip
        if not decision.accepted:
            raise Unauthenticated(decision.reason, code="stale_presence")
        save_device(tx, replace(device, presence=decision.record))
        health = tx.node_health.find(device_id)
        if state is not PresenceState.OFFLINE or health is None:
            return PresenceTaken(device_id, state, None)
        hosting = bool(health.replicas) or bool(
            (device.desired.get("workloads") or {}).get("replicas")
        )
        liveness = observe_will(health.liveness, now, hosting)
        tx.node_health.put_liveness(replace(health, liveness=liveness))
        return PresenceTaken(device_id, state, liveness.state.value)
