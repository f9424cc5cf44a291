"""Why a workload's replicas went where they did: every node as each replica saw it, its
score terms, and why it won, lost or was excluded (naming the failing constraint)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from edgefleet.core.workloads.placement_engine import Engine, new_engine
from edgefleet.core.workloads.placement_plan import Decision, Placement, build_plan
from edgefleet.core.workloads.terms import Node, ScoreTerms, Topology, Weights
from edgefleet.core.workloads.workload import Workload
from edgefleet.errors import InvalidInput


@dataclass(frozen=True)
class CandidateScore:
    """One node as seen when a replica was placed: its terms, or why it was excluded."""

    node_id: str
    excluded_by: str | None
    terms: ScoreTerms | None
    outcome: str


@dataclass(frozen=True)
class Explanation:
    workload: str
    decisions: tuple[Decision, ...]
    candidates: tuple[tuple[CandidateScore, ...], ...]  # per replica, best first


def explain(
    workload: str,
    workloads: Iterable[Workload],
    nodes: Iterable[Node],
    topology: Topology,
    current: Placement,
    now: datetime,
    weights: Weights = Weights(),
) -> Explanation:
    """Each candidate node's score terms for each replica of `workload`, best first, and
    why it won, lost, or was excluded (naming the failing constraint)."""
    engine = new_engine(workloads, nodes, topology, current, now, weights)
    if workload not in engine.workloads:
        raise InvalidInput(f"unknown workload {workload!r}")
    engine.watch = workload
    plan = build_plan(engine.run(), current, now)
    decisions = tuple(d for d in plan.decisions if d.workload == workload)
    return Explanation(workload, decisions, _candidates(engine))


def _candidates(engine: Engine) -> tuple[tuple[CandidateScore, ...], ...]:
    """Every node as each replica of the watched workload saw it, best first."""
    t = engine.table
    w = engine.workloads[engine.watch or ""]
    r = w.resources
    out: list[tuple[CandidateScore, ...]] = []
    for snap in engine.snapshots:
        total = sum(snap.parts[1:], snap.parts[0])
        winner = None if snap.chosen is None else t.ids[int(snap.cand[snap.chosen])]
        ranked: list[tuple[float, str, CandidateScore]] = []
        excluded: list[CandidateScore] = []
        for pos, i in enumerate(snap.cand.tolist()):
            terms = ScoreTerms(*(float(part[pos]) for part in snap.parts))
            if pos == snap.chosen:
                outcome = f"chosen for replica {snap.replica}"
            elif snap.feasible[pos]:
                outcome = "not chosen" if snap.chosen is None else (
                    f"lost to {winner} by {float(total[snap.chosen] - total[pos]):.2f}"
                )  # fmt: skip
            else:
                if i in snap.excluded:
                    why = "already holds (or keeps) another replica of this workload"
                else:
                    cpu, mem, acc = (float(f[pos]) for f in snap.free)
                    why = (
                        f"capacity: free {cpu:.0f}m cpu, {mem:.0f} MB, {acc:.0f} accelerators;"
                        f" needs {r.cpu_millicores}m, {r.memory_mb} MB, {r.accelerators}"
                    )
                excluded.append(CandidateScore(t.ids[i], why, terms, "excluded"))
                continue
            ranked.append(
                (-float(total[pos]), t.ids[i], CandidateScore(t.ids[i], None, terms, outcome))
            )
        in_cand = set(snap.cand.tolist())
        for i, node_id in enumerate(t.ids):
            if i not in in_cand:
                why = t.first_failure(w, i) or "not a candidate"
                excluded.append(CandidateScore(node_id, why, None, "excluded"))
        out.append(tuple(row for *_, row in sorted(ranked)) + tuple(excluded))
    return tuple(out)
