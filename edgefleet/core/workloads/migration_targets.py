"""Where an operator's migration goes: `edgefleet workloads migrate NAME --to NODE` or
`--selector S` picks the target with the same filter and score as placement.

The replica is placed afresh with two extra hard constraints: not on its current node,
and on the named node (or on a node matching the selector). Every other replica keeps its
place, so the answer is the node `place` itself would choose under those constraints, and
a refusal names the constraint or the capacity that rules each node out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from edgefleet.core.selector import Requirement, Selector, SelectorOp
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.placement import Placement, place, violated_constraint
from edgefleet.core.workloads.terms import Node, Topology, Weights
from edgefleet.core.workloads.workload import Workload
from edgefleet.errors import Conflict, InvalidInput, NotFound

NODE_ID_KEY = "node-id"  # a label every node carries in this computation only


@dataclass(frozen=True)
class TargetChoice:
    node_id: str | None
    reason: str


def choose_migration_target(
    workload: str,
    replica: int,
    workloads: Sequence[Workload],
    nodes: Sequence[Node],
    topology: Topology,
    current: Placement,
    now: datetime,
    *,
    to: str | None = None,
    selector: Selector | None = None,
    weights: Weights = Weights(),
) -> TargetChoice:
    """The node replica `replica` of `workload` should migrate to, or why there is none."""
    by_name = {w.name: w for w in workloads}
    w = by_name.get(workload)
    if w is None:
        raise NotFound(f"no workload named {workload!r}", code="workload_not_found")
    if not 0 <= replica < w.replicas:
        raise InvalidInput(f"{workload} has replicas 0..{w.replicas - 1}, not {replica}")
    source = next((a.node_id for a in current.assignments
                   if (a.workload, a.replica) == (workload, replica)), None)  # fmt: skip
    if source is None:
        raise Conflict(f"{workload}[{replica}] is not placed on any node",
                       code="replica_not_placed")  # fmt: skip
    extra = [Requirement(NODE_ID_KEY, SelectorOp.NOT_EQUALS, (source,))]
    if to is not None:
        if to == source:
            raise Conflict(f"{workload}[{replica}] already runs on {to}", code="already_there")
        refusal = _refusal(w, to, nodes, current)
        if refusal is not None:
            return TargetChoice(None, refusal)
        extra.append(Requirement(NODE_ID_KEY, SelectorOp.EQUALS, (to,)))
    if selector is not None:
        extra.extend(selector.requirements)
    constraints = replace(
        w.constraints, selector=Selector((*w.constraints.selector.requirements, *extra))
    )
    hypothetical = [replace(w, constraints=constraints) if x.name == workload else x
                    for x in workloads]  # fmt: skip
    labelled = [replace(n, labels={**n.labels, NODE_ID_KEY: n.id}) for n in nodes]
    others = Placement(
        tuple(a for a in current.assignments if (a.workload, a.replica) != (workload, replica)),
        current.generation,
    )
    plan = place(hypothetical, labelled, topology, others, now, weights)
    decision = next(d for d in plan.decisions if (d.workload, d.replica) == (workload, replica))
    if decision.node_id is None:
        return TargetChoice(None, decision.reason)
    total = decision.terms.total if decision.terms is not None else 0.0
    return TargetChoice(decision.node_id, f"{decision.node_id} scores {total:.2f}: "
                                          f"{decision.reason}")  # fmt: skip


def _refusal(w: Workload, to: str, nodes: Sequence[Node], current: Placement) -> str | None:
    node = next((n for n in nodes if n.id == to), None)
    if node is None:
        raise NotFound(f"no approved device {to!r} to migrate to", code="device_not_found")
    if node.liveness is not Liveness.ALIVE:
        return f"{to} is {node.liveness}"
    if not node.schedulable:
        return f"{to} is cordoned (draining)"
    failed = violated_constraint(w, node)
    if failed is not None:
        return f"{to} fails the workload's hard constraint {failed}"
    if any(a.workload == w.name and a.node_id == to for a in current.assignments):
        return f"{to} already runs another replica of {w.name}"
    return None
