"""The liveness controller, one for the control plane and the lab: judges nodes from their
heartbeat arrivals (phi accrual) and their forecasts (drain), and stores the verdicts the
placement controller acts on, through a `LivenessStore` port.

    store.markers ─▶ rows that moved? store.find_many ─▶ nodes due now ─▶ evaluate_liveness
        + drain_from_trends ─▶ verdict or drain changed? store.put_judgement ─▶ when next due

Heartbeats are stored as they arrive, by whoever receives them (the server's device link,
the lab's modelled links); a tick only writes a node whose verdict or drain changed, and
only if no heartbeat arrived since it was read (`put_judgement` refuses, the next tick
judges again), so it never overwrites fresher news — also when two replicas take turns.

A tick costs what changed, not the fleet:

- *Reading.* The markers (reported_at, state) of every node are read each tick, without
  decoding the rest of the rows; a node is decoded again only when its marker moved (a
  heartbeat, or a verdict another replica stored). Reading every marker keeps the cache
  exact whatever another replica wrote; the query returns short rows.
- *Judging.* After judging a node the controller knows the next moment its judgement can
  change without news: phi grows with the silence alone (`verdict_changes_at`), and a drain
  forecast moves only with new samples (`drain_changes_at`). A node is judged again at that
  moment, or when its marker moves; the rest of the tick is a heap lookup. Trends are
  fitted once per new set of samples, for the metrics the drain thresholds name.

The control plane's store is SQL (`server/services/liveness_store.py`), ticked every
`controller_interval_s`; the lab's is in memory (`controllers/memory_liveness.py`), ticked
at `next_due` on its simulated clock. Both run this code.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from edgefleet.core.workloads.failover import DEFAULT_DRAIN_THRESHOLDS, DrainThreshold, Trend
from edgefleet.core.workloads.failure_detector import DEFAULT_THRESHOLDS, Liveness, Thresholds
from edgefleet.core.workloads.liveness import evaluate_liveness, verdict_changes_at
from edgefleet.core.workloads.node_health import NodeHealth, Sample
from edgefleet.core.workloads.nodes import drain_changes_at, drain_from_trends, trends_of
from edgefleet.errors import EdgefleetError

log = logging.getLogger(__name__)

# What changes in a node's row when a heartbeat or a verdict is stored: (reported_at, state),
# reported_at as a token the store chooses (compared for equality only).
Marker = tuple[object, str]

# A judgement found due at or before `now` is a rounding slip; look again this much later
# rather than every tick.
_SLIP = timedelta(seconds=1)


class LivenessStore(Protocol):
    """The port the liveness controller runs on."""

    def markers(self) -> Mapping[str, Marker]:
        """The marker of every node, without the rest of its row."""
        ...

    def find_many(self, device_ids: Sequence[str]) -> Mapping[str, NodeHealth]:
        """The nodes of `device_ids` that exist, decoded."""
        ...

    def put_judgement(self, health: NodeHealth, read_reported_at: datetime | None) -> bool:
        """Store `health`'s liveness and drain, unless a heartbeat arrived since the row was
        read at `read_reported_at`; True when written."""
        ...


class Trends(Protocol):
    """Each node's metric trends, fitted once per new set of samples (the server shares its
    cache with placement's forecasts: `services.node_trends.NodeTrends`)."""

    def of(self, health: NodeHealth) -> Mapping[str, Trend]: ...

    def forget(self, device_ids: Iterable[str]) -> None: ...


class FittedTrends:
    """A `Trends` of one's own: device -> the samples its trends came from, and those;
    of `metrics` only, when given."""

    def __init__(self, metrics: Collection[str] | None = None) -> None:
        self._metrics = metrics
        self._fitted: dict[str, tuple[tuple[Sample, ...], Mapping[str, Trend]]] = {}

    def of(self, health: NodeHealth) -> Mapping[str, Trend]:
        samples = health.samples
        cached = self._fitted.get(health.device_id)
        if cached is None or (cached[0] is not samples and cached[0] != samples):
            cached = (samples, trends_of(samples, self._metrics))
            self._fitted[health.device_id] = cached
        return cached[1]

    def forget(self, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            self._fitted.pop(device_id, None)


@dataclass(frozen=True)
class LivenessPolicy:
    """What the controller judges by (the server's `WorkloadSettings.liveness_policy`)."""

    thresholds: Thresholds = DEFAULT_THRESHOLDS
    drain_horizon_s: float = 900.0
    drain_thresholds: tuple[DrainThreshold, ...] = DEFAULT_DRAIN_THRESHOLDS


@dataclass(frozen=True)
class LivenessChange:
    device_id: str
    before: Liveness
    after: Liveness
    phi: float
    draining: bool


def marker_of(health: NodeHealth) -> Marker:
    """A marker with `reported_at` as the datetime itself (the in-memory store's)."""
    return (health.reported_at, health.state.value)


class LivenessController:
    """`watching_since`: when this observer started (silence before it is not counted);
    `trends`: where node trends are fitted and kept (default: a cache of its own, of the
    metrics the drain thresholds name)."""

    def __init__(
        self,
        store: LivenessStore,
        policy: LivenessPolicy,
        watching_since: datetime,
        trends: Trends | None = None,
    ) -> None:
        self._store = store
        self._policy = policy
        self.watching_since = watching_since
        # device -> the node as last read or written, with its row's marker then
        self._known: dict[str, tuple[Marker, NodeHealth]] = {}
        if trends is None:  # a drain reads the trends of its thresholds' metrics only
            trends = FittedTrends({t.metric for t in policy.drain_thresholds})
        self._trends: Trends = trends
        # device -> when to judge it next (absent: not until its marker moves); the heap
        # holds (when, device) entries, stale ones skipped as they come up
        self._due: dict[str, datetime] = {}
        self._heap: list[tuple[datetime, str]] = []
        self.judged = 0  # nodes judged in the last tick

    def tick(self, now: datetime) -> list[LivenessChange]:
        """Judge the nodes whose judgement can have changed by `now`; returns the changes
        written."""
        self._load(now)
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, device_id = heapq.heappop(heap)
            if self._due.get(device_id) == at:
                del self._due[device_id]
                due.append(device_id)
        self.judged = len(due)
        changes = []
        for device_id in sorted(due):
            change = self._judge(self._known[device_id][1], now)
            if change is not None:
                changes.append(change)
        return changes

    def next_due(self) -> datetime | None:
        """The earliest moment a node is due to be judged (news aside); None: none is."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _load(self, now: datetime) -> None:
        """Decode the rows whose marker moved since the last tick; they are due now."""
        markers = self._store.markers()
        known = self._known
        stale = [d for d, m in markers.items() if d not in known or known[d][0] != m]
        fresh = self._store.find_many(stale) if stale else {}
        for device_id, health in fresh.items():
            # The marker read (a heartbeat stored since moves it again: read once more).
            known[device_id] = (markers[device_id], health)
            self._schedule(device_id, now)
        gone = known.keys() - markers.keys()
        for device_id in gone:
            del known[device_id]
            self._due.pop(device_id, None)
        if gone:
            self._trends.forget(gone)

    def _schedule(self, device_id: str, at: datetime | None) -> None:
        if at is None:
            self._due.pop(device_id, None)
        elif self._due.get(device_id) != at:
            self._due[device_id] = at
            heapq.heappush(self._heap, (at, device_id))

    def _judge(self, health: NodeHealth, now: datetime) -> LivenessChange | None:
        policy = self._policy
        judged = evaluate_liveness(health.liveness, now, self.watching_since, policy.thresholds)
        drain = health.drain
        trends = None
        if health.samples and judged.state is not Liveness.DEAD:
            trends = self._trends.of(health)
            drain = drain_from_trends(drain, health.device_id, trends, now,
                                      policy.drain_horizon_s, policy.drain_thresholds)  # fmt: skip
        if judged.state is health.state and drain.draining == health.drain.draining:
            self._schedule(health.device_id, self._next_look(health, trends, now))
            return None
        updated = replace(health, liveness=judged, drain=drain)
        # Judged again next tick: after a write (its next look, from the verdict written),
        # a refusal (a heartbeat came: its marker moved) or a failure (retried).
        self._schedule(health.device_id, now)
        try:
            written = self._store.put_judgement(updated, health.reported_at)
        except EdgefleetError as e:
            log.warning(
                "liveness update failed; will retry",
                extra={"device_id": health.device_id, "error": e.message},
            )
            return None
        if not written:
            return None
        marker = self._known[health.device_id][0]
        self._known[health.device_id] = ((marker[0], judged.state.value), updated)
        change = LivenessChange(health.device_id, health.state, judged.state,
                                round(judged.phi, 2), drain.draining)  # fmt: skip
        log.info("node liveness changed", extra={
            "device_id": change.device_id, "from": change.before.value,
            "to": change.after.value, "phi": change.phi, "draining": drain.draining,
            "drain_reason": drain.reason,
        })  # fmt: skip
        return change

    def _next_look(
        self, health: NodeHealth, trends: Mapping[str, Trend] | None, now: datetime
    ) -> datetime | None:
        """When the judgement of `health` (unchanged at `now`) can next change, news aside."""
        policy = self._policy
        at = verdict_changes_at(health.liveness, now, self.watching_since, policy.thresholds)
        if trends is not None:
            drain_at = drain_changes_at(
                health.drain, health.device_id, trends, now,
                policy.drain_horizon_s, policy.drain_thresholds,
            )  # fmt: skip
            if drain_at is not None and (at is None or drain_at < at):
                at = drain_at
        if at is not None and at <= now:
            at = now + _SLIP
        return at
