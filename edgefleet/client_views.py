"""What `FleetClient` returns, typed: the API's JSON documents as `TypedDict`s.

The answers stay the server's JSON (dicts with the wire's field names), so `-o json` and
`-o yaml` print exactly what the server sent and scripts keep their keys; the types let
mypy check every field the CLI, the simulator and the tests read. They mirror the server's
response models (`server/schemas/<noun>.py`) without pydantic, which the lean CLI install
does not have. Times are ISO 8601 text, as on the wire.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

# Workloads, placements, migrations, service endpoints (server/schemas/workloads.py).


class WorkloadView(TypedDict):
    name: str
    replicas: int
    priority: int
    stateful: bool
    releases: list[str]
    manifest: dict[str, Any]
    created_by: str
    created_at: str
    updated_by: str
    updated_at: str
    version: int


class AppliedWorkloadView(WorkloadView):
    outcome: str
    dry_run: bool


class CheckpointRefView(TypedDict):
    sha256: str
    size_bytes: int | None


class MigrationStepView(TypedDict):
    state: str
    weight_pct: int
    at: str
    detail: str


class MigrationView(TypedDict):
    id: str
    workload: str
    replica: int
    source: str
    source_name: str | None
    target: str
    target_name: str | None
    trigger: str
    reason: str
    state: str
    weight_pct: int
    stateful: bool
    generation: int
    checkpoint: CheckpointRefView | None
    steps: list[MigrationStepView]
    created_by: str
    created_at: str


# "from" is a keyword: these two are declared the functional way.
MoveView = TypedDict(
    "MoveView",
    {
        "replica": int,
        "from": str | None,
        "from_name": str | None,
        "to": str,
        "to_name": str | None,
        "kind": str,
        "reason": str,
        "generation": int,
        "at": str,
    },
)
LastMoveView = TypedDict("LastMoveView", {"at": str, "from": str | None, "to": str, "reason": str})


class PlacedReplicaView(TypedDict):
    replica: int
    node_id: str | None
    node: str | None
    generation: int | None
    liveness: str | None
    action: str | None
    reason: str
    last_move: LastMoveView | None
    state: str | None
    health: str | None
    restarts: int | None
    port: int | None
    address: str | None
    detail: str


class WorkloadStatusView(WorkloadView):
    placement: list[PlacedReplicaView]
    migrations: list[MigrationView]


class PlacementView(TypedDict):
    workload: str
    placement: list[PlacedReplicaView]
    migrations: list[MigrationView]


class DecisionView(TypedDict, total=False):
    workload: str
    replica: int
    action: str
    node_id: str | None
    from_node_id: str | None
    reason: str
    generation: int | None
    score: float  # absent when no node was scored


class CandidateView(TypedDict):
    node_id: str
    node: str | None
    excluded_by: str | None
    terms: dict[str, float] | None
    total: float | None
    outcome: str


class ReplicaCandidatesView(TypedDict):
    replica: int | None
    candidates: list[CandidateView]


class ExplanationView(TypedDict):
    workload: str
    decisions: list[DecisionView]
    replicas: list[ReplicaCandidatesView]


class NodeView(TypedDict):
    id: str
    name: str
    region: str
    zone: str
    residency: str | None
    liveness: str
    liveness_since: str
    phi: float
    reliability: float
    last_heartbeat_at: str | None
    heartbeats_seen: int
    cpu_millicores: int
    memory_mb: int
    power_source: str
    battery_pct: float | None
    draining: bool
    drain_reason: str
    address: str | None
    replicas: int


class EndpointView(TypedDict):
    replica: int
    node_id: str
    node: str | None
    address: str
    port: int
    url: str
    weight: int
    role: str
    healthy: bool
    migration: str | None


class ServiceEndpointsView(TypedDict):
    service: str
    endpoints: list[EndpointView]


# Rollouts and release trains (server/schemas/rollouts.py); times as the store writes them.


class RolloutSummaryView(TypedDict):
    id: str
    name: str
    release: str
    target: str
    state: str
    reason: str
    train: str | None
    created_by: str
    created_at: str | None
    updated_at: str | None
    started_at: str | None
    wave: int | None
    waves_total: int | None
    on_failure: str
    due_at: str | None


class RolloutListItemView(RolloutSummaryView):
    counts: dict[str, int]


class PlannedDeviceView(TypedDict):
    id: str
    name: str
    wave: int | None
    compatible: bool
    reason: str


class PlannedWaveView(TypedDict):
    index: int
    label: str
    size: int
    soak_s: float
    devices: list[str]


class PlanPreviewView(TypedDict):
    devices: list[PlannedDeviceView]
    waves: list[PlannedWaveView]


class CreatedRolloutView(TypedDict):
    created: bool
    superseded: list[str]
    rollout: RolloutSummaryView
    dry_run: NotRequired[bool]  # only with ?dry_run=true, with the plan
    plan: NotRequired[PlanPreviewView | None]


class ReleaseTrainView(TypedDict):
    name: str
    state: str
    reason: str
    releases: list[str]
    position: int
    current_release: str | None
    rollout_id: str | None
    allow_insufficient_data: bool
    description: str
    created_by: str
    created_at: str | None
    updated_at: str | None
    manifest: dict[str, Any]


class AppliedReleaseTrainView(TypedDict):
    action: str
    train: ReleaseTrainView
    dry_run: bool


class RehearsalView(TypedDict):
    id: str
    rollout: str
    release: str
    outcome: str
    size_bytes: int
    created_by: str
    created_at: str


class RehearsalWithReportView(RehearsalView):
    report: dict[str, Any]


# Governance: policies, roles, changes waiting for approval (server/schemas/governance.py).


class PolicyView(TypedDict):
    name: str
    manifest: dict[str, Any]
    updated_by: str
    updated_at: str


class AppliedPolicyView(TypedDict):
    outcome: str
    dry_run: bool
    policy: PolicyView


class ViolationView(TypedDict):
    policy: str
    rule: str
    reason: str


class PolicyTestView(TypedDict):
    kind: str
    policies: int
    allowed: bool
    violations: list[ViolationView]
    needs_approval: list[str]


class RoleView(TypedDict):
    name: str
    builtin: bool
    permissions: list[str]
    description: str
    updated_by: str | None
    updated_at: str | None
    tokens: list[str] | None


class AppliedRoleView(TypedDict):
    outcome: str
    dry_run: bool
    role: RoleView


class DeletedView(TypedDict):
    deleted: str


class ChangeView(TypedDict):
    id: str
    kind: str
    summary: str
    state: str
    requested_by: str
    requested_at: str
    decided_by: str | None
    decided_at: str | None


class ApprovedChangeView(ChangeView):
    root_version: int
