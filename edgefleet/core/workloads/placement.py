"""Placement: which node runs each replica of each workload, and why.

`place()` is a deterministic greedy scheduler. Workloads are taken in order (priority
descending; within a priority, affinity targets before the workloads drawn to them, then
the hardest to fit: accelerators, then larger requests; then name), their replicas by
index, and each replica goes to the best-scoring node that passes every hard constraint.
Affinity counts only workloads placed before: same or higher priority (the order puts the
target first); affinity to lower-priority work has no effect.

Filter (hard; `explain` names the first one a node fails):
    liveness     the node is alive and schedulable (suspect nodes keep what they hold, take
                 nothing new; dead nodes hold nothing)
    constraints  label selector, regions, zones, data residency, accelerator kind
    capacity     free cpu, memory and accelerators (replicas kept in place reserve theirs)
    distinct     at most one replica of a workload per node

Score (soft; higher is better; each term times its weight in `Weights`, by default
proximity 4, reliability 2, energy 1, headroom 1, affinity 1, spread 1, migration 1 plus
1 for stateful workloads):
    proximity    weighted mean over the workload's `near` targets of 1 / (1 + latency/ref),
                 ref = the workload's SLO latency or 50 ms; latency is measured
                 (`Topology.latency_ms`) or estimated from great-circle distance
                 (2 ms + 1 ms per 100 km); unknown: 500 ms. No targets: 1 everywhere.
    energy       1 on mains; on battery or solar 0.5 * charge + 0.5 * endurance, endurance
                 = forecast hours of runtime / 12 h (capped at 1)
    reliability  `Node.reliability`: the share of recent time the node was alive
    headroom     1 - u0, u0 = the larger of the node's cpu and memory share used by work
                 outside the plan (`Node.used_*`)
    load         -(C(u_after) - C(u_before)), u = the larger of the node's cpu and memory
                 share committed so far in this plan, C = `Weights.load_cost`: convex
                 and piecewise linear, by default 0 up to 70% and 10 per unit above, so
                 nodes fill up to 70% and then repel more work
    affinity     sum of +-weight of the affinity targets on the same node (or zone), over
                 the sum of weights: in [-1, 1]
    spread       -1 when spread over zones is asked and the zone already has a replica
    migration    +1 on the node a replica runs on now: the hysteresis. A replica moves
                 only when another node beats its current one by more than
                 `Weights.migration` (plus `stateful_migration` when it has a state
                 directory), so score noise below that never makes workloads flap.

Priority: replicas that stay put reserve their capacity before anything is placed, so new
work never squeezes out running work while any other node fits. When no node fits a
replica, it preempts: on the best node where evicting replicas of strictly lower priority
makes room, the lowest-priority ones are evicted (lowest priority first, then name); they
are rescheduled at their own turn, or reported unplaceable with the reason.

Ties (scores within 1e-9) go to the smallest stable hash of (workload, node id), so the
same input gives the same plan whatever the order of the input lists.

Scores use only what is already decided (not capacity reserved by later workloads), so a
plan is a fixpoint: `place(..., current=plan.placement)` on unchanged input keeps it.
The plan's total score, `score_placement`, is the sum of its picks' scores: the load terms
telescope to the sum over nodes of -(C(u_final) - C(u_initial)) whatever the order, and C
is convex and piecewise linear, so an ILP can find the optimum to compare with.

Repair: a replica that fits nowhere may push one replica of the same priority, placed
earlier in this run (never one kept in place), to that replica's next-best node.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.placement_engine import new_engine
from edgefleet.core.workloads.placement_explanation import CandidateScore, Explanation, explain
from edgefleet.core.workloads.placement_plan import (
    Assignment,
    Decision,
    DecisionAction,
    Placement,
    PlacementPlan,
    build_plan,
)
from edgefleet.core.workloads.terms import (
    Node,
    PowerSource,
    ScoreTerms,
    Topology,
    Weights,
    energy_term,
    estimate_latency_ms,
    violated_constraint,
)
from edgefleet.core.workloads.workload import Workload

__all__ = [
    "Assignment",
    "CandidateScore",
    "Decision",
    "DecisionAction",
    "Explanation",
    "Liveness",
    "Node",
    "Placement",
    "PlacementPlan",
    "PowerSource",
    "ScoreTerms",
    "Topology",
    "Weights",
    "build_plan",
    "energy_term",
    "estimate_latency_ms",
    "explain",
    "place",
    "score_placement",
    "violated_constraint",
]


def place(
    workloads: Iterable[Workload],
    nodes: Iterable[Node],
    topology: Topology,
    current: Placement,
    now: datetime,
    weights: Weights = Weights(),
) -> PlacementPlan:
    """The plan for every replica of every workload, each decision with its reason."""
    engine = new_engine(workloads, nodes, topology, current, now, weights)
    return build_plan(engine.run(), current, now)


def score_placement(
    placement: Placement,
    workloads: Iterable[Workload],
    nodes: Iterable[Node],
    topology: Topology,
    current: Placement,
    now: datetime,
    weights: Weights = Weights(),
) -> float:
    """The total score of `placement`: what `place` maximises greedily, comparable between
    plans for the same input (the quality benchmark uses it against an ILP optimum)."""
    engine = new_engine(workloads, nodes, topology, current, now, weights)
    return engine.total_score([(a.workload, a.replica, a.node_id) for a in placement.assignments])
