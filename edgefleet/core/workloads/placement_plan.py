"""A placement plan: which node runs each replica (the assignment in force, with its
generation) and the decision taken for each replica, with its reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from edgefleet.core.workloads.terms import ScoreTerms


@dataclass(frozen=True)
class Assignment:
    """Replica `replica` of `workload` runs on `node_id`, as decided at `generation`."""

    workload: str
    replica: int
    node_id: str
    generation: int


@dataclass(frozen=True)
class Placement:
    """The assignment in force. `generation` grows by one for every replica placed or moved,
    so a node returning after a failover can tell which of its copies it no longer owns."""

    assignments: tuple[Assignment, ...] = ()
    generation: int = 0

    def nodes_of(self, workload: str) -> tuple[str, ...]:
        """Nodes running `workload`, by replica index."""
        found = sorted((a.replica, a.node_id) for a in self.assignments if a.workload == workload)
        return tuple(node for _, node in found)

    def on_node(self, node_id: str) -> tuple[Assignment, ...]:
        return tuple(a for a in self.assignments if a.node_id == node_id)


class DecisionAction(StrEnum):
    KEEP = "keep"  # stays where it runs
    PLACE = "place"  # a new replica
    MOVE = "move"  # leaves its node for another
    HOLD = "hold"  # its node is suspect: paused in place, not moved
    UNPLACEABLE = "unplaceable"
    REMOVE = "remove"  # no longer wanted (scaled down or deleted)
    DEFER = "defer"  # a move postponed by a rate limit: stays where it is for now


@dataclass(frozen=True)
class Decision:
    workload: str
    replica: int
    action: DecisionAction
    node_id: str | None
    from_node_id: str | None
    reason: str
    terms: ScoreTerms | None = None
    generation: int | None = None


@dataclass(frozen=True)
class PlacementPlan:
    placement: Placement
    decisions: tuple[Decision, ...]
    computed_at: datetime

    @property
    def moves(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action is DecisionAction.MOVE)

    @property
    def unplaceable(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action is DecisionAction.UNPLACEABLE)


def build_plan(decisions: Sequence[Decision], current: Placement, now: datetime) -> PlacementPlan:
    """The plan of `decisions` over `current`: replicas that land on a new node get fresh
    generations (one each, in order), the others keep theirs."""
    kept = {(a.workload, a.replica): a for a in current.assignments}
    generation = current.generation
    assignments: list[Assignment] = []
    numbered: list[Decision] = []
    for d in decisions:
        if d.node_id is not None and d.action is not DecisionAction.REMOVE:
            old = kept.get((d.workload, d.replica))
            if old is not None and old.node_id == d.node_id:
                gen = old.generation
            else:
                generation += 1
                gen = generation
            assignments.append(Assignment(d.workload, d.replica, d.node_id, gen))
            d = replace(d, generation=gen)
        numbered.append(d)
    assignments.sort(key=lambda a: (a.workload, a.replica))
    return PlacementPlan(Placement(tuple(assignments), generation), tuple(numbered), now)
