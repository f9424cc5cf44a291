"""The placement in force as the control plane stores it: the assignments with their
generations, the last decisions with their reasons (what `placements show` prints), and a
row version for optimistic updates by several controller replicas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgefleet.core.workloads.placement import Assignment, Decision, Placement


@dataclass(frozen=True)
class PlacementRecord:
    placement: Placement = field(default_factory=Placement)
    decisions: tuple[Mapping[str, Any], ...] = ()
    computed_at: datetime | None = None
    version: int = 0  # 0: never stored


def decision_to_dict(d: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {
        "workload": d.workload,
        "replica": d.replica,
        "action": d.action.value,
        "node_id": d.node_id,
        "from_node_id": d.from_node_id,
        "reason": d.reason,
        "generation": d.generation,
    }
    if d.terms is not None:
        out["score"] = round(d.terms.total, 4)
    return out


def decision_key(d: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two decisions the same for storage (reasons quote scores that drift)."""
    return d["workload"], d["replica"], d["action"], d["node_id"], d["from_node_id"]


def assignments_to_json(placement: Placement) -> list[list[Any]]:
    return [[a.workload, a.replica, a.node_id, a.generation] for a in placement.assignments]


def assignments_from_json(raw: Sequence[Sequence[Any]], generation: int) -> Placement:
    assignments = tuple(
        sorted(
            (Assignment(str(w), int(r), str(n), int(g)) for w, r, n, g in raw),
            key=lambda a: (a.workload, a.replica),
        )
    )
    return Placement(assignments, generation)


def with_assignment(placement: Placement, moved: Assignment) -> Placement:
    """`placement` with replica `moved` on its node at its generation (a migration's
    commit); the placement's generation never goes back."""
    kept = [a for a in placement.assignments
            if (a.workload, a.replica) != (moved.workload, moved.replica)]  # fmt: skip
    assignments = tuple(sorted((*kept, moved), key=lambda a: (a.workload, a.replica)))
    return Placement(assignments, max(placement.generation, moved.generation))
