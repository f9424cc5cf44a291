"""Liveness controller: judges every node from its heartbeat arrivals (phi accrual) and its
forecasts (drain), and stores the verdicts the placement controller acts on.

Heartbeats are recorded as they arrive (`DeviceLinkService.report` -> `record_report`); a
tick only writes a node whose verdict or drain changed, and only if no heartbeat arrived
since it was read (the next tick judges again), so it never overwrites fresher news.

A tick runs every `controller_interval_s` over the whole fleet, so it keeps the nodes it
decoded: it reads every node's (reported_at, state) and decodes again only the rows where
either moved (a heartbeat, or a verdict stored by another replica); judging a node it
already holds is arithmetic. A node's metric trends (the drain forecast's input) are fitted
once per new set of samples, not on every tick (`node_trends.NodeTrends`, which forecast
destinations share).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from edgefleet.clock import Clock
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.liveness import evaluate_liveness
from edgefleet.core.workloads.node_health import NodeHealth
from edgefleet.core.workloads.nodes import drain_from_trends
from edgefleet.errors import EdgefleetError
from edgefleet.server.services.node_trends import NodeTrends
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
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: WorkloadSettings,
        trends: NodeTrends | None = None,  # shared with the placement controller
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self.watching_since: datetime = clock.now()
        # device -> the node as last read or written, with the marker it was read at
        self._known: dict[str, tuple[tuple[datetime | None, str], NodeHealth]] = {}
        self._trends = trends or NodeTrends()

    def _load(self) -> list[NodeHealth]:
        """Every node, decoding only rows changed since the last tick."""
        with self._db.read() as tx:
            markers = tx.node_health.markers()
            stale = [d for d, m in markers.items() if d not in self._known
                     or self._known[d][0] != m]  # fmt: skip
            fresh = tx.node_health.find_many(stale) if stale else {}
        for device_id, health in fresh.items():
            self._known[device_id] = ((health.reported_at, health.state.value), health)
        gone = self._known.keys() - markers.keys()
        for device_id in gone:
            del self._known[device_id]
        self._trends.forget(gone)
        return [self._known[d][1] for d in sorted(markers) if d in self._known]

    def tick(self) -> list[LivenessChange]:
        """Judge every node now; returns the changes written."""
        now = self._clock.now()
        settings = self._settings
        changes = []
        for health in self._load():
            judged = evaluate_liveness(
                health.liveness, now, self.watching_since, settings.thresholds()
            )
            drain = health.drain
            if health.samples and judged.state is not Liveness.DEAD:
                drain = drain_from_trends(
                    drain,
                    health.device_id,
                    self._trends.of(health),
                    now,
                    settings.drain_horizon_s,
                    settings.drain_thresholds(),
                )
            if judged.state is health.state and drain.draining == health.drain.draining:
                continue
            updated = replace(health, liveness=judged, drain=drain)
            try:
                with self._db.transaction() as tx:
                    written = tx.node_health.put_judgement(updated, health.reported_at)
            except EdgefleetError as e:
                log.warning(
                    "liveness update failed; will retry",
                    extra={"device_id": health.device_id, "error": e.message},
                )
                continue
            if not written:
                continue
            self._known[health.device_id] = ((health.reported_at, judged.state.value), updated)
            change = LivenessChange(health.device_id, health.state, judged.state,
                                    round(judged.phi, 2), drain.draining)  # fmt: skip
            log.info("node liveness changed", extra={
                "device_id": change.device_id, "from": change.before.value,
                "to": change.after.value, "phi": change.phi, "draining": drain.draining,
                "drain_reason": drain.reason,
            })  # fmt: skip
            changes.append(change)
        return changes
