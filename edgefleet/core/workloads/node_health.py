"""What the control plane knows about one node beyond its device record: its liveness, the
copies of replicas it reported in its last heartbeat, checkpoints it uploaded, its reported
address and power, recent samples for forecasts, and whether a forecast drains it.

Heartbeats write it (`record_report`); the controllers read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edgefleet.core.protocol import NodeStatus, WorkloadsReport, to_dict
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.liveness import NodeLiveness, observe_heartbeat
from edgefleet.core.workloads.migration import CheckpointStatus, CopyState, CopyStatus

MAX_SAMPLES = 120
SAMPLE_WINDOW_S = 1800.0

Sample = tuple[datetime, Mapping[str, float]]  # (when, metric -> value)


@dataclass(frozen=True)
class DrainState:
    draining: bool
    reason: str
    since: datetime | None = None
    crosses_at: datetime | None = None


NOT_DRAINING = DrainState(False, "no forecast crosses a threshold")


@dataclass(frozen=True)
class NodeHealth:
    device_id: str
    liveness: NodeLiveness
    replicas: tuple[Mapping[str, Any], ...] = ()  # the last heartbeat's replica reports
    checkpoints: tuple[Mapping[str, Any], ...] = ()
    node: Mapping[str, Any] = field(default_factory=dict)  # address, power, load
    samples: tuple[Sample, ...] = ()
    drain: DrainState = NOT_DRAINING
    reported_at: datetime | None = None

    @property
    def state(self) -> Liveness:
        return self.liveness.state

    @property
    def address(self) -> str | None:
        value = self.node.get("address")
        return None if value is None else str(value)

    def report_of(self, workload: str, replica: int) -> Mapping[str, Any] | None:
        return next(
            (
                r
                for r in self.replicas
                if r.get("workload") == workload and r.get("replica") == replica
            ),
            None,
        )

    def copy_status(self, workload: str, replica: int) -> CopyStatus | None:
        """This node's copy of the replica as last reported, if it reported one."""
        report = self.report_of(workload, replica)
        if report is None:
            return None
        try:
            state = CopyState(report.get("state", "stopped"))
        except ValueError:
            state = CopyState.STOPPED
        return CopyStatus(
            generation=int(report.get("generation", -1)),
            state=state,
            healthy=state is CopyState.RUNNING and report.get("health") == "ok",
            detail=str(report.get("detail", "")),
            restored_sha256=report.get("restored_sha256"),
        )

    def checkpoint_for(self, migration_id: str) -> CheckpointStatus | None:
        for cp in self.checkpoints:
            if cp.get("migration") == migration_id:
                return CheckpointStatus(cp.get("sha256"), cp.get("size_bytes"),
                                        str(cp.get("error") or ""))  # fmt: skip
        return None


def record_report(
    previous: NodeHealth | None,
    device_id: str,
    at: datetime,
    workloads: WorkloadsReport | None,
    node: NodeStatus | None,
    interval_s: float | None = None,
) -> NodeHealth:
    """The node after a heartbeat at `at` (its report's workloads and node sections):
    liveness observed, reports replaced, samples of battery and load appended.
    `interval_s`: the heartbeat interval the node runs with now, when known (its liveness
    is judged against it)."""
    liveness = observe_heartbeat(None if previous is None else previous.liveness, at,
                                 scheduled=node is None or node.scheduled,
                                 interval_s=interval_s)  # fmt: skip
    reading = {} if node is None else {"battery_pct": node.battery_pct, "cpu_load": node.cpu_load}
    values = {k: float(v) for k, v in reading.items() if v is not None}
    samples = add_sample(() if previous is None else previous.samples, at, values)
    workloads = workloads or WorkloadsReport()
    return NodeHealth(
        device_id=device_id,
        liveness=liveness,
        replicas=tuple(to_dict(r) for r in workloads.replicas),
        checkpoints=tuple(to_dict(c) for c in workloads.checkpoints),
        node={} if node is None else to_dict(node),
        samples=tuple(samples),
        drain=NOT_DRAINING if previous is None else previous.drain,
        reported_at=at,
    )


def add_sample(
    samples: Sequence[Sample], at: datetime, values: Mapping[str, float]
) -> list[Sample]:
    """`samples` with one more, bounded in count and age (oldest dropped)."""
    if not values:
        return list(samples)
    cutoff = at - timedelta(seconds=SAMPLE_WINDOW_S)
    kept = [s for s in samples if cutoff <= s[0] < at]
    kept.append((at, dict(values)))
    return kept[-MAX_SAMPLES:]


def drain_to_dict(state: DrainState) -> dict[str, Any]:
    return {
        "draining": state.draining,
        "reason": state.reason,
        "since": None if state.since is None else state.since.isoformat(),
        "crosses_at": None if state.crosses_at is None else state.crosses_at.isoformat(),
    }


def drain_from_dict(raw: Mapping[str, Any] | None) -> DrainState:
    if not raw:
        return NOT_DRAINING
    since, crosses = raw.get("since"), raw.get("crosses_at")
    return DrainState(
        bool(raw.get("draining")),
        str(raw.get("reason", "")),
        None if since is None else datetime.fromisoformat(since),
        None if crosses is None else datetime.fromisoformat(crosses),
    )


def samples_to_json(samples: Sequence[Sample]) -> list[list[Any]]:
    return [[at.isoformat(), dict(values)] for at, values in samples]


def samples_from_json(raw: Sequence[Sequence[Any]] | None) -> list[Sample]:
    return [(datetime.fromisoformat(str(at)), {str(k): float(v) for k, v in values.items()})
            for at, values in raw or []]  # fmt: skip
