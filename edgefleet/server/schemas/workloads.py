"""HTTP wire schemas: workloads, placements, migrations and service endpoints."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from edgefleet.core.workloads.endpoints import Endpoint, EndpointRole
from edgefleet.core.workloads.failure_detector import Liveness, phi
from edgefleet.core.workloads.migration import Migration, MigrationState, MigrationTrigger
from edgefleet.core.workloads.move import MoveKind, PlacementMove
from edgefleet.core.workloads.placement_explanation import CandidateScore, Explanation
from edgefleet.core.workloads.placement_plan import Decision, DecisionAction
from edgefleet.core.workloads.record import WorkloadRecord
from edgefleet.core.workloads.terms import PowerSource, ScoreTerms
from edgefleet.server.schemas.base import IsoDatetime, Strict
from edgefleet.server.services.workloads import (
    NodeView,
    ReplicaView,
    ServiceEndpoints,
    WorkloadStatus,
)

_DEVICE_ID_RE = re.compile(r"\bd-[a-z2-7]{20}\b")


class ApplyWorkloadRequest(Strict):
    manifest: dict[str, Any] = Field(
        description="A Workload manifest (kind: Workload, in the Kubernetes shape or flat), "
        "as its YAML parses to JSON; see docs/workloads.md."
    )


class MigrateRequest(Strict):
    replica: int = Field(0, ge=0, le=1000)
    to: str | None = Field(None, max_length=128, description="Target device (id or name)")
    selector: str | None = Field(
        None, max_length=4096, description="Or: the best node matching this label selector"
    )


def humanized(text: str, names: Mapping[str, str]) -> str:
    """Free text with device ids replaced by device names (reasons are for people)."""
    return _DEVICE_ID_RE.sub(lambda m: names.get(m.group(0), m.group(0)), text)


class WorkloadOut(BaseModel):
    name: str
    replicas: int
    priority: int
    stateful: bool
    releases: list[str] = Field(description="NAME@VERSION each, resolved when applied")
    manifest: dict[str, Any] = Field(description="The manifest as applied")
    created_by: str
    created_at: IsoDatetime
    updated_by: str
    updated_at: IsoDatetime
    version: int

    @classmethod
    def fields_of(cls, record: WorkloadRecord) -> dict[str, Any]:
        spec = record.spec
        return {
            "name": record.name,
            "replicas": spec.replicas,
            "priority": spec.priority,
            "stateful": spec.stateful,
            "releases": [str(r) for r in record.releases],
            "manifest": dict(record.document),
            "created_by": record.created_by,
            "created_at": record.created_at,
            "updated_by": record.updated_by,
            "updated_at": record.updated_at,
            "version": record.version,
        }


class AppliedWorkloadOut(WorkloadOut):
    outcome: str = Field(description="created, updated or unchanged")
    dry_run: bool

    @classmethod
    def of(cls, record: WorkloadRecord, outcome: str, dry_run: bool) -> AppliedWorkloadOut:
        return cls(**cls.fields_of(record), outcome=outcome, dry_run=dry_run)


class CheckpointRefOut(BaseModel):
    sha256: str
    size_bytes: int | None


class MigrationStepOut(BaseModel):
    state: MigrationState
    weight_pct: int
    at: IsoDatetime
    detail: str


class MigrationOut(BaseModel):
    id: str
    workload: str
    replica: int
    source: str
    source_name: str | None
    target: str
    target_name: str | None
    trigger: MigrationTrigger
    reason: str
    state: MigrationState
    weight_pct: int = Field(description="The target's share of the replica's traffic")
    stateful: bool
    generation: int
    checkpoint: CheckpointRefOut | None
    steps: list[MigrationStepOut]
    created_by: str
    created_at: IsoDatetime

    @classmethod
    def of(cls, m: Migration, names: Mapping[str, str]) -> MigrationOut:
        return cls(
            id=m.id,
            workload=m.workload,
            replica=m.replica,
            source=m.source,
            source_name=names.get(m.source),
            target=m.target,
            target_name=names.get(m.target),
            trigger=m.trigger,
            reason=humanized(m.reason, names),
            state=m.state,
            weight_pct=m.weight_pct,
            stateful=m.stateful,
            generation=m.generation,
            checkpoint=None
            if m.checkpoint_sha256 is None
            else CheckpointRefOut(sha256=m.checkpoint_sha256, size_bytes=m.checkpoint_size_bytes),
            steps=[
                MigrationStepOut(
                    state=s.state,
                    weight_pct=s.weight_pct,
                    at=s.at,
                    detail=humanized(s.detail, names),
                )
                for s in m.steps
            ],
            created_by=m.created_by,
            created_at=m.created_at,
        )


class MoveOut(BaseModel):
    replica: int
    from_: str | None = Field(serialization_alias="from")
    from_name: str | None
    to: str
    to_name: str | None
    kind: MoveKind
    reason: str
    generation: int
    at: IsoDatetime

    @classmethod
    def of(cls, m: PlacementMove, names: Mapping[str, str]) -> MoveOut:
        return cls(
            replica=m.replica,
            from_=m.from_node_id,
            from_name=None if m.from_node_id is None else names.get(m.from_node_id),
            to=m.to_node_id,
            to_name=names.get(m.to_node_id),
            kind=m.kind,
            reason=humanized(m.reason, names),
            generation=m.generation,
            at=m.at,
        )


class LastMoveOut(BaseModel):
    """When the replica last moved, and why (as the placement controller stored it)."""

    at: str
    from_: str | None = Field(serialization_alias="from")
    to: str
    reason: str


class PlacedReplicaOut(BaseModel):
    replica: int
    node_id: str | None
    node: str | None = Field(description="The node's device name")
    generation: int | None
    liveness: Liveness | None
    action: str | None = Field(description="The placement controller's last decision")
    reason: str
    last_move: LastMoveOut | None
    state: str | None = Field(description="As the node reports this generation")
    health: str | None
    restarts: int | None
    port: int | None
    address: str | None
    detail: str

    @classmethod
    def of(cls, r: ReplicaView, names: Mapping[str, str]) -> PlacedReplicaOut:
        report = dict(r.report or {})
        decision = dict(r.decision or {})
        moved = decision.get("last_move")
        current = report.get("generation") == r.generation
        return cls(
            replica=r.replica,
            node_id=r.node_id,
            node=r.node_name,
            generation=r.generation,
            liveness=r.liveness,
            action=decision.get("action"),
            reason=humanized(decision.get("reason", ""), names),
            last_move=None
            if not moved
            else LastMoveOut(
                at=moved["at"],
                from_=moved["from"],
                to=moved["to"],
                reason=humanized(moved["reason"], names),
            ),
            state=report.get("state") if current else None,
            health=report.get("health") if current else None,
            restarts=report.get("restarts"),
            port=report.get("port"),
            address=r.address,
            detail=report.get("detail", ""),
        )


class WorkloadStatusOut(WorkloadOut):
    placement: list[PlacedReplicaOut]
    migrations: list[MigrationOut] = Field(description="The active ones")

    @classmethod
    def of(cls, status: WorkloadStatus) -> WorkloadStatusOut:
        names = status.names
        return cls(
            **cls.fields_of(status.record),
            placement=[PlacedReplicaOut.of(r, names) for r in status.replicas],
            migrations=[MigrationOut.of(m, names) for m in status.migrations],
        )


class PlacementOut(BaseModel):
    workload: str
    placement: list[PlacedReplicaOut]
    migrations: list[MigrationOut]

    @classmethod
    def of(cls, status: WorkloadStatus) -> PlacementOut:
        names = status.names
        return cls(
            workload=status.record.name,
            placement=[PlacedReplicaOut.of(r, names) for r in status.replicas],
            migrations=[MigrationOut.of(m, names) for m in status.migrations],
        )


class DecisionOut(BaseModel):
    workload: str
    replica: int
    action: DecisionAction
    node_id: str | None
    from_node_id: str | None
    reason: str
    generation: int | None
    score: float | None = Field(
        None,
        exclude_if=lambda score: score is None,
        description="The chosen node's total score; absent when no node was scored",
    )

    @classmethod
    def of(cls, d: Decision, names: Mapping[str, str]) -> DecisionOut:
        return cls(
            workload=d.workload,
            replica=d.replica,
            action=d.action,
            node_id=d.node_id,
            from_node_id=d.from_node_id,
            reason=humanized(d.reason, names),
            generation=d.generation,
            score=None if d.terms is None else round(d.terms.total, 4),
        )


class ScoreTermsOut(BaseModel):
    proximity: float
    energy: float
    reliability: float
    headroom: float
    affinity: float
    load: float
    spread: float
    migration: float

    @classmethod
    def of(cls, terms: ScoreTerms) -> ScoreTermsOut:
        return cls(**{k: round(v, 4) for k, v in vars(terms).items()})


class CandidateOut(BaseModel):
    node_id: str
    node: str | None
    excluded_by: str | None
    terms: ScoreTermsOut | None
    total: float | None
    outcome: str

    @classmethod
    def of(cls, c: CandidateScore, names: Mapping[str, str]) -> CandidateOut:
        return cls(
            node_id=c.node_id,
            node=names.get(c.node_id),
            excluded_by=c.excluded_by,
            terms=None if c.terms is None else ScoreTermsOut.of(c.terms),
            total=None if c.terms is None else round(c.terms.total, 4),
            outcome=humanized(c.outcome, names),
        )


class ReplicaCandidatesOut(BaseModel):
    replica: int | None
    candidates: list[CandidateOut] = Field(description="Best first")


class ExplanationOut(BaseModel):
    workload: str
    decisions: list[DecisionOut]
    replicas: list[ReplicaCandidatesOut]

    @classmethod
    def of(cls, result: Explanation, names: Mapping[str, str]) -> ExplanationOut:
        rounds = []
        for candidates in result.candidates:
            chosen = next((c.outcome for c in candidates if c.outcome.startswith("chosen")), "")
            rounds.append(
                ReplicaCandidatesOut(
                    replica=int(chosen.rsplit(" ", 1)[1]) if chosen else None,
                    candidates=[CandidateOut.of(c, names) for c in candidates],
                )
            )
        return cls(
            workload=result.workload,
            decisions=[DecisionOut.of(d, names) for d in result.decisions],
            replicas=rounds,
        )


class NodeOut(BaseModel):
    id: str
    name: str
    region: str
    zone: str
    residency: str | None
    liveness: Liveness
    liveness_since: IsoDatetime
    phi: float = Field(description="The failure detector's suspicion now")
    reliability: float
    last_heartbeat_at: IsoDatetime | None
    heartbeats_seen: int
    cpu_millicores: int
    memory_mb: int
    power_source: PowerSource
    battery_pct: int | float | None
    draining: bool
    drain_reason: str
    address: str | None
    replicas: int

    @classmethod
    def of(cls, v: NodeView, now: datetime) -> NodeOut:
        n, h = v.node, v.health
        return cls(
            id=v.device_id,
            name=v.name,
            region=n.region,
            zone=n.zone,
            residency=n.residency,
            liveness=h.state,
            liveness_since=h.liveness.since,
            phi=round(max(0.0, min(phi(h.liveness.history, now), 1e9)), 3),
            reliability=round(h.liveness.reliability(now), 4),
            last_heartbeat_at=h.liveness.history.last_heartbeat_at,
            heartbeats_seen=len(h.liveness.history.intervals_us),
            cpu_millicores=n.cpu_millicores,
            memory_mb=n.memory_mb,
            power_source=n.power_source,
            battery_pct=n.battery_pct,
            draining=h.drain.draining,
            drain_reason=h.drain.reason,
            address=h.address,
            replicas=v.replicas,
        )


class EndpointOut(BaseModel):
    replica: int
    node_id: str
    node: str | None
    address: str
    port: int
    url: str
    weight: int = Field(description="The endpoint's share of the replica's traffic")
    role: EndpointRole
    healthy: bool
    migration: str | None


class ServiceEndpointsOut(BaseModel):
    service: str
    endpoints: list[EndpointOut]

    @classmethod
    def of(cls, found: ServiceEndpoints) -> ServiceEndpointsOut:
        def one(e: Endpoint) -> EndpointOut:
            return EndpointOut(
                replica=e.replica,
                node_id=e.node_id,
                node=found.names.get(e.node_id),
                address=e.address,
                port=e.port,
                url=e.url,
                weight=e.weight,
                role=e.role,
                healthy=e.healthy,
                migration=e.migration,
            )

        return cls(service=found.service, endpoints=[one(e) for e in found.endpoints])
