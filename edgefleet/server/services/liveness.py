"""Liveness controller: judges every node from its heartbeat arrivals (phi accrual) and its
forecasts (drain), and stores the verdicts the placement controller acts on.

Heartbeats are recorded as they arrive (`DeviceLinkService.report` -> `record_report`); a
tick only writes a node whose verdict or drain changed, and only if no heartbeat arrived
since it was read (the next tick judges again), so it never overwrites fresher news.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from edgefleet.clock import Clock
from edgefleet.core.failure_detector import Liveness
from edgefleet.core.liveness import evaluate_liveness
from edgefleet.core.placement_nodes import update_drain
from edgefleet.errors import EdgefleetError
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LivenessChange:
    device_id: str
    before: Liveness
    after: Liveness
    phi: float
    draining: bool


class LivenessController:
    def __init__(self, db: Database, clock: Clock, settings: WorkloadSettings) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self.watching_since: datetime = clock.now()

    def tick(self) -> list[LivenessChange]:
        """Judge every node now; returns the changes written."""
        now = self._clock.now()
        settings = self._settings
        with self._db.read() as tx:
            everything = tx.node_health.all()
        changes = []
        for health in everything.values():
            judged = evaluate_liveness(
                health.liveness, now, self.watching_since, settings.thresholds()
            )
            drain = health.drain
            if health.samples and judged.state is not Liveness.DEAD:
                drain = update_drain(drain, health.device_id, health.samples, now,
                                     settings.drain_horizon_s, settings.drain_thresholds())
            if judged.state is health.state and drain.draining == health.drain.draining:
                continue
            updated = replace(health, liveness=judged, drain=drain)
            try:
                with self._db.transaction() as tx:
                    written = tx.node_health.put_judgement(updated, health.reported_at)
            except EdgefleetError as e:
                log.warning("liveness update failed; will retry",
                            extra={"device_id": health.device_id, "error": e.message})
                continue
            if not written:
                continue
            change = LivenessChange(health.device_id, health.state, judged.state,
                                    round(judged.phi, 2), drain.draining)  # fmt: skip
            log.info("node liveness changed", extra={
                "device_id": change.device_id, "from": change.before.value,
                "to": change.after.value, "phi": change.phi, "draining": drain.draining,
                "drain_reason": drain.reason,
            })  # fmt: skip
            changes.append(change)
        return changes
