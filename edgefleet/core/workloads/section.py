"""The `workloads` section of a device's desired state: exactly the replicas it should hold,
each with its placement generation, and what a returning node must stop (fencing).

Rendered on the control plane from the placement in force and the active migrations::

    "workloads": {"replicas": [
        {"workload": "detector", "replica": 0, "generation": 7, "phase": "run",
         "document": {...the Workload manifest...},
         "releases": [{"name", "version", "targets": [{path, artifact, kind, file_name,
                                                      sha256, length_bytes}, ...]}],
         "migration": "mig-...",                  # a migration's copy on its target
         "checkpoint": {"migration": "mig-..."},  # source: archive and upload the state now
         "restore": {"migration", "sha256", "size_bytes"}}]}   # target: unpack this first

`phase` is `run`, or `stage` for a migration target that fetches (and restores) but does not
start yet. The agent runs each listed replica at its generation and stops every copy that is
not listed with that generation (`fence_replicas`): after a failover the returning node
learns from this list alone that its copies now belong elsewhere.

Nothing here imports placement (numpy stays on the server); the agent reads this section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgefleet.core.workloads.migration import TARGET_HOLDS, TARGET_RUNS, Migration, MigrationState
from edgefleet.errors import InvalidInput


class ReplicaPhase(StrEnum):
    RUN = "run"
    STAGE = "stage"


@dataclass(frozen=True)
class ReplicaEntry:
    """One replica a node should hold."""

    workload: str
    replica: int
    generation: int
    phase: ReplicaPhase
    document: Mapping[str, Any]
    releases: tuple[Mapping[str, Any], ...] = ()
    migration: str | None = None  # set on a migration target's copy
    checkpoint_migration: str | None = None
    restore: Mapping[str, Any] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.workload, self.replica

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workload": self.workload,
            "replica": self.replica,
            "generation": self.generation,
            "phase": self.phase.value,
            "document": dict(self.document),
            "releases": [dict(r) for r in self.releases],
        }
        if self.migration is not None:
            out["migration"] = self.migration
        if self.checkpoint_migration is not None:
            out["checkpoint"] = {"migration": self.checkpoint_migration}
        if self.restore is not None:
            out["restore"] = dict(self.restore)
        return out


@dataclass(frozen=True)
class NodeAssignment:
    """A replica the placement in force gives to some node."""

    workload: str
    replica: int
    node_id: str
    generation: int


@dataclass(frozen=True)
class WorkloadSource:
    """What a replica entry needs about its workload: the manifest and its releases."""

    document: Mapping[str, Any]
    releases: tuple[Mapping[str, Any], ...] = field(default=())


def replicas_for_node(
    node_id: str,
    assignments: Sequence[NodeAssignment],
    migrations: Sequence[Migration],
    workloads: Mapping[str, WorkloadSource],
) -> tuple[ReplicaEntry, ...]:
    """The replicas `node_id` should hold: its assignments (with a checkpoint request while
    a migration checkpoints one of them) and the copies it receives as a migration target.
    Assignments of workloads no longer declared are left out (the node stops them)."""
    active = {(m.workload, m.replica): m for m in migrations if m.active}
    out: list[ReplicaEntry] = []
    for a in assignments:
        source = workloads.get(a.workload)
        if a.node_id != node_id or source is None:
            continue
        m = active.get((a.workload, a.replica))
        checkpoint = None
        if m is not None and m.source == node_id and m.state is MigrationState.CHECKPOINTING:
            checkpoint = m.id
        out.append(ReplicaEntry(a.workload, a.replica, a.generation, ReplicaPhase.RUN,
                                source.document, source.releases,
                                checkpoint_migration=checkpoint))  # fmt: skip
    for m in active.values():
        source = workloads.get(m.workload)
        if m.target != node_id or m.state not in TARGET_HOLDS or source is None:
            continue
        restore = None
        if m.stateful and m.checkpoint_sha256 is not None:
            restore = {"migration": m.id, "sha256": m.checkpoint_sha256,
                       "size_bytes": m.checkpoint_size_bytes}  # fmt: skip
        phase = ReplicaPhase.RUN if m.state in TARGET_RUNS else ReplicaPhase.STAGE
        out.append(
            ReplicaEntry(
                m.workload,
                m.replica,
                m.generation,
                phase,
                source.document,
                source.releases,
                migration=m.id,
                restore=restore,
            )
        )
    out.sort(key=lambda e: e.key)
    return tuple(out)


def render_workloads_section(entries: Sequence[ReplicaEntry]) -> dict[str, Any] | None:
    """The section for a node's desired state; None when it should hold nothing."""
    if not entries:
        return None
    return {"replicas": [e.to_dict() for e in sorted(entries, key=lambda e: e.key)]}


def parse_workloads_section(section: Mapping[str, Any] | None) -> tuple[ReplicaEntry, ...]:
    """The entries of a received section (agent side); InvalidInput on a malformed one."""
    if not section:
        return ()
    entries: list[ReplicaEntry] = []
    try:
        for raw in section.get("replicas", []):
            checkpoint = raw.get("checkpoint")
            entries.append(
                ReplicaEntry(
                    workload=str(raw["workload"]),
                    replica=int(raw["replica"]),
                    generation=int(raw["generation"]),
                    phase=ReplicaPhase(raw.get("phase", "run")),
                    document=dict(raw["document"]),
                    releases=tuple(dict(r) for r in raw.get("releases", [])),
                    migration=raw.get("migration"),
                    checkpoint_migration=None if not checkpoint else str(checkpoint["migration"]),
                    restore=None if raw.get("restore") is None else dict(raw["restore"]),
                )
            )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InvalidInput(f"malformed workloads section: {e!r}") from None
    keys = [e.key for e in entries]
    if len(set(keys)) != len(keys):
        raise InvalidInput("malformed workloads section: a replica is listed twice")
    return tuple(entries)


@dataclass(frozen=True)
class FenceVerdict:
    workload: str
    replica: int
    generation: int
    keep: bool
    reason: str


def fence_replicas(
    wanted: Mapping[tuple[str, int], int], running: Mapping[tuple[str, int], int]
) -> tuple[FenceVerdict, ...]:
    """For each copy a node runs ((workload, replica) -> generation): keep it when the
    desired state lists it at that generation, stop it otherwise.

    >>> [v.reason for v in fence_replicas({("w", 0): 9}, {("w", 0): 7, ("v", 1): 3})]
    ['no longer listed for this node', 'superseded: the placement generation is now 9']
    """
    out = []
    for (workload, replica), generation in sorted(running.items()):
        listed = wanted.get((workload, replica))
        if listed is None:
            keep, reason = False, "no longer listed for this node"
        elif listed != generation:
            keep, reason = False, f"superseded: the placement generation is now {listed}"
        else:
            keep, reason = True, f"owned at generation {generation}"
        out.append(FenceVerdict(workload, replica, generation, keep, reason))
    return tuple(out)
