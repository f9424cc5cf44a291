"""Placement: speed at fleet scale, and plan quality against the optimum of an ILP.

    .venv/bin/python bench/placement/run.py [--quick] [--runs 5] [--instances 5]

Speed: `place()` on 10,000 nodes x 1,000 workloads (`instances.py`: four regions, residency,
selectors, accelerators, batteries, 50 named data sources, 1% dead and 1% suspect nodes,
~1,550 replicas). Median of `--runs` wall-clock runs, for three situations:

    fresh        nothing placed yet
    steady       replanning the previous plan with nothing changed (every replica kept)
    failover     replanning after 1% of the alive nodes died

Quality: `--instances` random instances of 500 nodes x 100 workloads (one priority level,
no affinity, no failed nodes, requests doubled so that capacity binds). Both plans are
costed the same way:

    cost = -score_placement(plan) + 100 x unplaced replicas
    gap  = (cost(greedy) - cost(optimum)) / score_placement(optimum)

The gap is relative to the optimum's score, not its cost: the unplaced term is a constant
shared by both plans whenever they place the same number of replicas, and dividing by it
would only blur the comparison (a plan that places fewer replicas pays 100 per replica).

`score_placement` is the objective `place` maximises greedily: for each replica the
weighted proximity, energy, reliability and headroom terms of its node, minus spread
penalties, minus per node the load curve's rise from its starting utilisation. The load
curve is piecewise linear, so the same objective is an exact mixed-integer program: binary
x[w, n] for every (workload, node) allowed by the hard constraints, sum_n x[w, n] <=
replicas, cpu/memory/accelerator capacity per node, one variable per node and kink for the
load curve, one per (workload, zone) for spread. CBC (through PuLP, a dev dependency only)
solves it; the table reports the greedy plan's gap to that optimum and, for scale, the gap
of a plan that ignores scores (every weight 0: a hash-random feasible node).

Prints a table and writes bench/results/placement.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from instances import Instance, make_instance

from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.placement import (
    Assignment,
    Placement,
    PlacementPlan,
    Weights,
    place,
    score_placement,
)
from edgefleet.core.workloads.terms import NodeTable

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
UNPLACED_COST = 100.0
TARGET_SECONDS = 1.0
TARGET_GAP = 0.02
RESULTS = Path(__file__).resolve().parents[1] / "results" / "placement.json"


def timed(fn: Any, runs: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def measure_speed(runs: int, seed: int) -> list[dict[str, Any]]:
    inst = make_instance(10_000, 1_000, seed)
    replicas = sum(w.replicas for w in inst.workloads)
    go = lambda nodes, current: place(inst.workloads, nodes, inst.topology, current, NOW)  # noqa: E731
    rows = []
    median, times, plan = timed(lambda: go(inst.nodes, Placement()), runs)
    rows.append(row("fresh", median, times, plan, replicas))
    median, times, steady = timed(lambda: go(inst.nodes, plan.placement), runs)
    rows.append(row("steady", median, times, steady, replicas))
    alive = [n for n in inst.nodes if n.liveness is Liveness.ALIVE]
    dying = {n.id for n in alive[:: len(alive) // (len(alive) // 100)]}
    failed = [
        dataclasses.replace(n, liveness=Liveness.DEAD) if n.id in dying else n for n in inst.nodes
    ]
    median, times, after = timed(lambda: go(failed, plan.placement), runs)
    rows.append(row("failover", median, times, after, replicas))
    return rows


def row(
    name: str, median: float, times: list[float], plan: PlacementPlan, replicas: int
) -> dict[str, Any]:
    actions: dict[str, int] = {}
    for d in plan.decisions:
        actions[d.action.value] = actions.get(d.action.value, 0) + 1
    return {
        "situation": name,
        "nodes": 10_000,
        "workloads": 1_000,
        "replicas": replicas,
        "median_s": median,
        "runs_s": times,
        "decisions": actions,
    }


def solve_ilp(
    inst: Instance, weights: Weights, time_limit_s: float
) -> tuple[Placement, dict[str, Any]]:
    """The optimum of the placement objective as a mixed-integer program (see the docstring)."""
    nodes = sorted(inst.nodes, key=lambda n: n.id)
    table = NodeTable(nodes, inst.topology, NOW)
    prob = pulp.LpProblem("placement", pulp.LpMaximize)
    x: dict[tuple[str, int], pulp.LpVariable] = {}
    objective: list[Any] = []
    on_node: dict[int, list[tuple[Any, pulp.LpVariable]]] = {}
    for w in inst.workloads:
        cand = table.signature(w).cand.tolist()
        proximity = table.proximity(w)
        chosen = []
        for i in cand:
            score = (
                weights.proximity * (1.0 if proximity is None else float(proximity[i]))
                + weights.energy * float(table.energy[i])
                + weights.reliability * float(table.reliability[i])
                + weights.headroom * float(table.headroom[i])
            )
            var = pulp.LpVariable(f"x_{w.name}_{i}", cat="Binary")
            x[w.name, i] = var
            objective.append((score + UNPLACED_COST) * var)
            chosen.append(var)
            on_node.setdefault(i, []).append((w, var))
        prob += pulp.lpSum(chosen) <= w.replicas
        if w.preferences.spread_zones:
            zones: dict[int, list[pulp.LpVariable]] = {}
            for i in cand:
                zones.setdefault(int(table.zone_key[i]), []).append(x[w.name, i])
            for z, members in zones.items():
                if len(members) > 1:
                    extra = pulp.LpVariable(f"spread_{w.name}_{z}", lowBound=0)
                    prob += extra >= pulp.lpSum(members) - 1
                    objective.append(-weights.spread * extra)
    for i, members in on_node.items():
        cpu = pulp.lpSum(w.resources.cpu_millicores * v for w, v in members)
        mem = pulp.lpSum(w.resources.memory_mb * v for w, v in members)
        prob += cpu <= float(table.cap_cpu[i] - table.base_cpu[i])
        prob += mem <= float(table.cap_mem[i] - table.base_mem[i])
        if any(w.resources.accelerators for w, _ in members):
            prob += pulp.lpSum(w.resources.accelerators * v for w, v in members) <= float(
                table.cap_acc[i]
            )
        start = max(table.base_cpu[i] * table.inv_cpu[i], table.base_mem[i] * table.inv_mem[i])
        for k, (kink, weight) in enumerate(weights.load_steps):
            above = pulp.LpVariable(f"load_{i}_{k}", lowBound=0)
            prob += above >= (table.base_cpu[i] + cpu) * float(table.inv_cpu[i]) - kink
            prob += above >= (table.base_mem[i] + mem) * float(table.inv_mem[i]) - kink
            objective.append(-weight * (above - max(0.0, float(start) - kink)))
    prob += pulp.lpSum(objective)
    started = time.perf_counter()
    prob.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, threads=1))
    solve_s = time.perf_counter() - started
    picked = sorted(key for key, v in x.items() if (v.value() or 0) > 0.5)
    count: dict[str, int] = {}
    assignments = []
    for name, i in picked:
        assignments.append(Assignment(name, count.get(name, 0), nodes[i].id, 0))
        count[name] = count.get(name, 0) + 1
    info = {
        "status": pulp.LpStatus[prob.status],
        "proven_optimal": prob.sol_status == pulp.LpSolutionOptimal,
        "solve_s": solve_s,
        "binaries": len(x),
        "objective": float(pulp.value(prob.objective)) - UNPLACED_COST * len(picked),
    }
    return Placement(tuple(assignments)), info


def cost(inst: Instance, placement: Placement, weights: Weights) -> tuple[float, float, int]:
    """(cost, score, replicas placed) of a plan."""
    replicas = sum(w.replicas for w in inst.workloads)
    score = score_placement(
        placement, inst.workloads, inst.nodes, inst.topology, Placement(), NOW, weights
    )
    placed = len(placement.assignments)
    return -score + UNPLACED_COST * (replicas - placed), score, placed


def measure_quality(instances: int, seed: int, time_limit_s: float) -> list[dict[str, Any]]:
    weights = Weights()
    blind = Weights(0, 0, 0, 0, 0, 0, 0, 0, load_steps=())
    rows = []
    for k in range(instances):
        inst = make_instance(
            500, 100, seed + k, liveness=False, affinity=False, size=2.0, priorities=(0,)
        )
        started = time.perf_counter()
        greedy = place(inst.workloads, inst.nodes, inst.topology, Placement(), NOW, weights)
        greedy_s = time.perf_counter() - started
        naive = place(inst.workloads, inst.nodes, inst.topology, Placement(), NOW, blind)
        optimum, info = solve_ilp(inst, weights, time_limit_s)
        replicas = sum(w.replicas for w in inst.workloads)
        g_cost, g_score, g_placed = cost(inst, greedy.placement, weights)
        n_cost, _, n_placed = cost(inst, naive.placement, weights)
        o_cost, o_score, o_placed = cost(inst, optimum, weights)
        rows.append(
            {
                "instance": seed + k,
                "replicas": replicas,
                "greedy_cost": g_cost,
                "greedy_score": g_score,
                "greedy_placed": g_placed,
                "greedy_s": greedy_s,
                "optimal_cost": o_cost,
                "optimal_score": o_score,
                "optimal_placed": o_placed,
                "gap": (g_cost - o_cost) / o_score,
                "score_ratio": g_score / o_score,
                "blind_cost": n_cost,
                "blind_placed": n_placed,
                "blind_gap": (n_cost - o_cost) / o_score,
                "ilp": info,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=120.0, help="CBC seconds per instance")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 runs, 2 instances")
    args = parser.parse_args()
    runs, instances = (3, 2) if args.quick else (args.runs, args.instances)

    speed = measure_speed(runs, args.seed)
    print(f"Speed: 10,000 nodes x 1,000 workloads, median of {runs} runs")
    print(f"(target <= {TARGET_SECONDS:g} s)")
    header = f"{'situation':<10} {'replicas':>8} {'median s':>8} {'runs s':<28} decisions"
    print(header)
    print("-" * len(header))
    for r in speed:
        runs_s = " ".join(f"{t:.2f}" for t in r["runs_s"])
        decisions = ", ".join(f"{k} {v}" for k, v in sorted(r["decisions"].items()))
        print(
            f"{r['situation']:<10} {r['replicas']:>8} {r['median_s']:>8.3f} {runs_s:<28} "
            f"{decisions}"
        )

    quality = measure_quality(instances, args.seed, args.time_limit)
    print("\nQuality: 500 nodes x 100 workloads, cost vs the ILP optimum")
    print(f"(target gap <= {TARGET_GAP:.0%})")
    header = (
        f"{'instance':>8} {'replicas':>8} {'optimum':>9} {'greedy':>9} {'gap':>6} {'placed':>7} "
        f"{'blind gap':>9} {'ILP s':>6} {'proven':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in quality:
        print(
            f"{r['instance']:>8} {r['replicas']:>8} {r['optimal_cost']:>9.2f} "
            f"{r['greedy_cost']:>9.2f} {r['gap']:>6.2%} "
            f"{r['greedy_placed']:>3}/{r['optimal_placed']:<3} {r['blind_gap']:>9.1%} "
            f"{r['ilp']['solve_s']:>6.1f} {'yes' if r['ilp']['proven_optimal'] else 'no':>6}"
        )
    gaps = [r["gap"] for r in quality]
    print(f"\nmean gap {statistics.fmean(gaps):.2%}, worst {max(gaps):.2%}")

    report = {
        "benchmark": "placement",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "note": "shared 2-core machine: timings are noisy",
        "speed": {"target_s": TARGET_SECONDS, "rows": speed},
        "quality": {
            "target_gap": TARGET_GAP,
            "cost": "-score_placement(plan) + 100 x unplaced replicas",
            "gap": "(cost(greedy) - cost(optimum)) / score_placement(optimum)",
            "mean_gap": statistics.fmean(gaps),
            "worst_gap": max(gaps),
            "rows": quality,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
