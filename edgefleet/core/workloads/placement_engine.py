"""The greedy placer's engine: one run over columns of node state, updated incrementally
(the algorithm is described in `placement`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

import numpy as np

from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.placement_plan import Decision, DecisionAction, Placement
from edgefleet.core.workloads.terms import (
    Bools,
    Floats,
    Ints,
    Node,
    NodeTable,
    ScoreTerms,
    Signature,
    Topology,
    Weights,
    demand,
    hash64,
    mix64,
    placement_order,
    positions,
)
from edgefleet.core.workloads.workload import AffinityScope, Workload
from edgefleet.errors import InvalidInput

TIE_EPSILON = 1e-9
RELOCATION_TRIES = 8  # blocked nodes tried when a replica fits nowhere


def new_engine(
    workloads: Iterable[Workload],
    nodes: Iterable[Node],
    topology: Topology,
    current: Placement,
    now: datetime,
    weights: Weights,
) -> Engine:
    """An engine over the input, checked: names listed once, capacities positive."""
    by_name: dict[str, Workload] = {}
    for w in workloads:
        if w.name in by_name:
            raise InvalidInput(f"workload {w.name!r} is listed twice")
        by_name[w.name] = w
    ordered = sorted(nodes, key=lambda n: n.id)
    for before, after in pairwise(ordered):
        if before.id == after.id:
            raise InvalidInput(f"node {before.id!r} is listed twice")
    for node in ordered:
        if node.cpu_millicores <= 0 or node.memory_mb <= 0:
            raise InvalidInput(f"node {node.id!r}: cpu_millicores and memory_mb must be > 0")
    seen: set[tuple[str, int]] = set()
    for a in current.assignments:
        if (a.workload, a.replica) in seen:
            raise InvalidInput(f"current placement lists {a.workload}[{a.replica}] twice")
        seen.add((a.workload, a.replica))
    return Engine(by_name, NodeTable(ordered, topology, now), current, weights)


Slot = tuple[str, int]  # (workload, replica index)


@dataclass
class Snapshot:
    """What one replica of the explained workload saw when it was placed."""

    replica: int
    cand: Ints
    parts: tuple[Floats, ...]  # in the order of ScoreTerms' fields
    feasible: Bools
    free: tuple[Floats, Floats, Floats]
    excluded: frozenset[int]
    chosen: int | None


@dataclass(frozen=True)
class View:
    """One workload's view of its candidate nodes: what does not change between replicas."""

    parts: tuple[Floats, ...]  # the static terms
    total: Floats
    inv_cpu: Floats
    inv_mem: Floats


class Engine:
    """One run of the greedy placer over columns of node state, updated incrementally."""

    def __init__(
        self,
        workloads: Mapping[str, Workload],
        table: NodeTable,
        current: Placement,
        weights: Weights,
    ) -> None:
        self.workloads, self.table, self.weights = workloads, table, weights
        self.order = placement_order(workloads)
        self.current: dict[Slot, str] = {
            (a.workload, a.replica): a.node_id for a in current.assignments
        }
        t = table
        self.committed = [t.base_cpu.copy(), t.base_mem.copy(), np.zeros(len(t.ids))]
        self.free = [t.cap_cpu - t.base_cpu, t.cap_mem - t.base_mem, t.cap_acc.copy()]
        self.util: Floats = np.maximum(t.base_cpu * t.inv_cpu, t.base_mem * t.inv_mem)
        self.load_now: Floats = weights.load_cost(self.util)
        self.reserved: dict[Slot, int] = {}
        self.reserved_on: dict[int, list[Slot]] = {}
        self.lost: dict[Slot, tuple[int | None, str]] = {}
        self.hosts: dict[str, list[int]] = {}
        self.decisions: dict[Slot, Decision] = {}
        self.movable_on: dict[int, list[Slot]] = {}  # replicas placed or moved in this run
        self.watch: str | None = None
        self.snapshots: list[Snapshot] = []

    def _adjust(self, i: int, w: Workload, sign: int, *, commit: bool) -> None:
        r = w.resources
        for k, amount in enumerate((r.cpu_millicores, r.memory_mb, r.accelerators)):
            self.free[k][i] -= sign * amount
            if commit:
                self.committed[k][i] += sign * amount
        if commit:
            t = self.table
            cpu, mem = self.committed[0][i] * t.inv_cpu[i], self.committed[1][i] * t.inv_mem[i]
            self.util[i] = max(cpu, mem)
            self.load_now[i] = self.weights.load_cost_at(self.util[i])

    def _reserve(self, slot: Slot, i: int) -> None:
        self.reserved[slot] = i
        self.reserved_on.setdefault(i, []).append(slot)
        self._adjust(i, self.workloads[slot[0]], +1, commit=False)

    def _release(self, slot: Slot) -> int:
        i = self.reserved.pop(slot)
        self.reserved_on[i].remove(slot)
        self._adjust(i, self.workloads[slot[0]], -1, commit=False)
        return i

    # -- the run -------------------------------------------------------------------------

    def run(self) -> list[Decision]:
        self._reserve_current()
        for name in self.order:
            self._place_workload(self.workloads[name])
        decisions = list(self.decisions.values())
        for (name, replica), node_id in sorted(self.current.items()):
            w = self.workloads.get(name)
            if w is None or replica >= w.replicas:
                why = "workload deleted" if w is None else f"scaled down to {w.replicas} replicas"
                reason = f"stop the copy on {node_id}: {why}"
                action = DecisionAction.REMOVE
                decisions.append(Decision(name, replica, action, None, node_id, reason))
        return decisions

    def _reserve_current(self) -> None:
        """Replicas that may stay reserve their capacity before anything is placed."""
        t = self.table
        used: set[tuple[str, int]] = set()
        for slot, node_id in sorted(self.current.items()):
            w = self.workloads.get(slot[0])
            if w is None or slot[1] >= w.replicas:
                continue
            i = t.index.get(node_id)
            if i is None:
                self.lost[slot] = (None, f"node {node_id} is gone from the fleet")
            elif (w.name, i) in used:
                self.lost[slot] = (i, f"another replica already runs on {node_id}")
            elif t.nodes[i].liveness is Liveness.DEAD:
                self.lost[slot] = (i, f"node {node_id} is dead")
            elif not t.signature(w).hard_ok[i]:
                failed = t.first_failure(w, i, liveness=False)
                self.lost[slot] = (i, f"node {node_id} no longer satisfies {failed}")
            else:
                used.add((w.name, i))
                self._reserve(slot, i)

    def _place_workload(self, w: Workload) -> None:
        t = self.table
        sig = t.signature(w)
        own = {
            r: self._release((w.name, r)) for r in range(w.replicas) if (w.name, r) in self.reserved
        }
        static = self._static(w, sig.cand)
        statics = self._view(sig.cand, static)
        taken: set[int] = set()
        for replica in range(w.replicas):
            slot, cur = (w.name, replica), own.get(replica)
            exclude = taken | {i for r, i in own.items() if r > replica}
            if cur is not None and t.nodes[cur].liveness is Liveness.SUSPECT:
                pick: int | None = cur
                decision = Decision(
                    w.name, replica, DecisionAction.HOLD, t.ids[cur], t.ids[cur],
                    f"held on {t.ids[cur]}: node is suspect, so the replica is paused in place "
                    "until the node returns or is declared dead",
                )  # fmt: skip
            else:
                zones = {int(t.zone_key[i]) for i in taken}
                pick, decision = self._pick(w, replica, sig, statics, exclude, zones, cur)
            if pick is not None:
                self._adjust(pick, w, +1, commit=True)
                taken.add(pick)
                if decision.action in (DecisionAction.PLACE, DecisionAction.MOVE):
                    self.movable_on.setdefault(pick, []).append(slot)
            self.decisions[slot] = decision
        self.hosts[w.name] = sorted(taken)

    def _static(self, w: Workload, idx: Ints) -> tuple[Floats, ...]:
        """Weighted proximity, energy, reliability, headroom and affinity of nodes `idx`."""
        t, wt = self.table, self.weights
        proximity = t.proximity(w)
        prox = wt.proximity * (np.ones(len(idx)) if proximity is None else proximity[idx])
        affinity = np.zeros(len(idx))
        terms = w.preferences.affinity
        for term in terms:
            hosts = np.array(self.hosts.get(term.workload, []), np.intp)
            if not len(hosts):
                continue
            if term.scope is AffinityScope.NODE:
                near = np.isin(idx, hosts)
            else:
                near = np.isin(t.zone_key[idx], t.zone_key[hosts])
            affinity += (-term.weight if term.anti else term.weight) * near
        if terms:
            affinity *= wt.affinity / sum(term.weight for term in terms)
        return (
            prox,
            wt.energy * t.energy[idx],
            wt.reliability * t.reliability[idx],
            wt.headroom * t.headroom[idx],
            affinity,
        )

    def _evaluate(
        self,
        w: Workload,
        cand: Ints,
        statics: View,
        exclude: Iterable[int],
        zones: set[int],
        cur: int | None,
    ) -> tuple[Floats, Bools, tuple[Floats, ...]]:
        """Scores of `cand` for one replica of `w` now, which of them fit, and the terms."""
        t, wt, r = self.table, self.weights, w.resources
        static, static_total = statics.parts, statics.total
        feasible = (self.free[0][cand] >= r.cpu_millicores) & (self.free[1][cand] >= r.memory_mb)
        if r.accelerators:
            feasible &= self.free[2][cand] >= r.accelerators
        feasible[positions(cand, exclude)] = False
        after = np.maximum(
            (self.committed[0][cand] + r.cpu_millicores) * statics.inv_cpu,
            (self.committed[1][cand] + r.memory_mb) * statics.inv_mem,
        )
        load = self.load_now[cand] - wt.load_cost(after)
        spread: Floats = np.zeros(len(cand))
        if w.preferences.spread_zones and zones:
            used = np.isin(t.zone_key[cand], np.array(sorted(zones), np.intp))
            spread = np.where(used, -wt.spread, 0.0)
        bonus = np.zeros(len(cand))
        bonus[positions(cand, () if cur is None else (cur,))] = self._migration_cost(w)
        return (
            static_total + load + spread + bonus,
            feasible,
            (*static, load, spread, bonus),
        )

    def _view(self, cand: Ints, static: tuple[Floats, ...]) -> View:
        t = self.table
        return View(static, sum(static[1:], static[0]), t.inv_cpu[cand], t.inv_mem[cand])

    def _migration_cost(self, w: Workload) -> float:
        return self.weights.migration + (self.weights.stateful_migration if w.stateful else 0.0)

    def _pick(
        self,
        w: Workload,
        replica: int,
        sig: Signature,
        statics: View,
        exclude: set[int],
        zones: set[int],
        cur: int | None,
    ) -> tuple[int | None, Decision]:
        t, cand, slot = self.table, sig.cand, (w.name, replica)
        score, feasible, parts = self._evaluate(w, cand, statics, exclude, zones, cur)
        chosen = self._choose(w, cand, score, feasible)
        aside: str | None = None
        if chosen is None:
            blocked = ~feasible
            blocked[positions(cand, exclude)] = False
            chosen, aside = self._relocate(w, cand, score, blocked)
        if chosen is None:
            chosen = self._preempt(w, cand, score, exclude)
        if w.name == self.watch:
            free = (self.free[0][cand], self.free[1][cand], self.free[2][cand])
            self.snapshots.append(
                Snapshot(replica, cand, parts, feasible, free, frozenset(exclude), chosen)
            )
        if chosen is None:
            if cur is not None:
                why = self._why_unplaceable(w, sig, exclude)
                reason = f"kept on {t.ids[cur]} although it is cordoned: {why}"
                return cur, Decision(
                    w.name, replica, DecisionAction.KEEP, t.ids[cur], t.ids[cur], reason
                )
            lost_why = self.lost.get(slot, (None, ""))[1]
            reason = self._why_unplaceable(w, sig, exclude)
            if lost_why:
                reason = f"{lost_why}; no other node can take it: {reason}"
            from_id = self.current.get(slot)
            return None, Decision(
                w.name, replica, DecisionAction.UNPLACEABLE, None, from_id, reason
            )
        i = int(cand[chosen])
        terms = ScoreTerms(*(float(part[chosen]) for part in parts))
        if aside is not None:
            reason = f"placed on {t.ids[i]} (score {float(score[chosen]):.2f}): {aside}"
        else:
            reason = self._reason(w, slot, cand, score, feasible, chosen, cur)
        if cur is not None:
            action = DecisionAction.KEEP if i == cur else DecisionAction.MOVE
        else:
            action = DecisionAction.MOVE if slot in self.current else DecisionAction.PLACE
        return i, Decision(w.name, replica, action, t.ids[i], self.current.get(slot), reason, terms)

    def _relocate(
        self, w: Workload, cand: Ints, score: Floats, blocked: Bools
    ) -> tuple[int | None, str | None]:
        """Make room for a replica that fits nowhere by moving one replica of the same
        priority, placed earlier in this run (never one kept in place), to its next-best
        node. Tries the best few blocked nodes; keeps the move that loses least score."""
        t = self.table
        need = demand(w)
        positions = np.flatnonzero(blocked)
        ranked = positions[np.argsort(-score[positions], kind="stable")][:RELOCATION_TRIES]
        best: tuple[float, int, Slot, int, Decision] | None = None
        for pos in ranked.tolist():
            n = int(cand[pos])
            for v in sorted(self.movable_on.get(n, [])):
                wv = self.workloads[v[0]]
                dv = demand(wv)
                if wv.priority != w.priority or any(
                    self.free[k][n] + dv[k] < need[k] for k in range(3)
                ):
                    continue
                alt = self._alternative(v, n, w.name)
                if alt is None:
                    continue
                before = self.decisions[v].terms
                after = alt[1].terms.total if alt[1].terms else 0.0
                gain = float(score[pos]) + after - (before.total if before else 0.0)
                if best is None or gain > best[0] + TIE_EPSILON:
                    best = (gain, pos, v, alt[0], alt[1])
        if best is None:
            return None, None
        _, pos, v, m, decision = best
        n, wv = int(cand[pos]), self.workloads[v[0]]
        self._adjust(n, wv, -1, commit=True)
        self._adjust(m, wv, +1, commit=True)
        self.movable_on[n].remove(v)
        if decision.action is not DecisionAction.KEEP:
            self.movable_on.setdefault(m, []).append(v)
        self.hosts[v[0]] = sorted({*self.hosts[v[0]], m} - {n})
        self.decisions[v] = decision
        return pos, f"no node had room, so {v[0]}[{v[1]}] moved aside to {t.ids[m]}"

    def _alternative(self, v: Slot, n: int, for_name: str) -> tuple[int, Decision] | None:
        """The best node other than `n` for replica `v`, and its decision there."""
        t, wv = self.table, self.workloads[v[0]]
        cand = t.signature(wv).cand
        static = self._static(wv, cand)
        others = set(self.hosts.get(v[0], [])) | {n}
        zones = {int(t.zone_key[i]) for i in others - {n}}
        cur = t.index.get(self.current.get(v, "")) if v not in self.lost else None
        score, feasible, parts = self._evaluate(
            wv, cand, self._view(cand, static), others, zones, cur
        )
        chosen = self._choose(wv, cand, score, feasible)
        if chosen is None:
            return None
        m = int(cand[chosen])
        terms = ScoreTerms(*(float(part[chosen]) for part in parts))
        if m == cur:
            action = DecisionAction.KEEP
        else:
            action = DecisionAction.MOVE if v in self.current else DecisionAction.PLACE
        reason = (
            f"{'kept on' if m == cur else 'placed on'} {t.ids[m]} (score {terms.total:.2f}): "
            f"moved aside from {t.ids[n]} to make room for {for_name}, which fits nowhere else"
        )
        decision = Decision(v[0], v[1], action, t.ids[m], self.current.get(v), reason, terms)
        return m, decision

    def _choose(self, w: Workload, cand: Ints, score: Floats, allowed: Bools) -> int | None:
        """Position of the best allowed score; near-ties go to the smallest stable hash."""
        masked = np.where(allowed, score, -np.inf)
        best = masked.max(initial=-np.inf)
        if best == -np.inf:
            return None
        tied = np.flatnonzero(masked >= best - TIE_EPSILON)
        if len(tied) == 1:
            return int(tied[0])
        keys = mix64(self.table.hash[cand[tied]] ^ np.uint64(hash64(w.name)))
        return int(tied[int(np.argmin(keys))])

    def _preempt(self, w: Workload, cand: Ints, score: Floats, exclude: set[int]) -> int | None:
        """Make room by evicting strictly lower-priority reserved replicas, if that works."""
        need = (w.resources.cpu_millicores, w.resources.memory_mb, w.resources.accelerators)
        room: dict[int, list[Slot]] = {}
        for i, slots in self.reserved_on.items():
            lower = [s for s in slots if self.workloads[s[0]].priority < w.priority]
            if not lower or i in exclude:
                continue
            gain = [sum(demand(self.workloads[s[0]])[k] for s in lower) for k in range(3)]
            if all(self.free[k][i] + gain[k] >= need[k] for k in range(3)):
                room[i] = lower
        allowed = np.isin(cand, np.array(sorted(room), np.intp))
        chosen = self._choose(w, cand, score, allowed)
        if chosen is None:
            return None
        i = int(cand[chosen])
        victims = sorted(room[i], key=lambda s: (self.workloads[s[0]].priority, s[0], -s[1]))
        for victim in victims:
            if all(self.free[k][i] >= need[k] for k in range(3)):
                break
            self._release(victim)
            vw = self.workloads[victim[0]]
            self.lost[victim] = (
                i,
                f"displaced from {self.table.ids[i]} by higher-priority workload {w.name} "
                f"(priority {w.priority} > {vw.priority})",
            )
        return chosen

    # -- reasons -------------------------------------------------------------------------

    def _reason(
        self,
        w: Workload,
        slot: Slot,
        cand: Ints,
        score: Floats,
        feasible: Bools,
        chosen: int,
        cur: int | None,
    ) -> str:
        t, migration = self.table, self._migration_cost(w)
        i, s = int(cand[chosen]), float(score[chosen])
        others = feasible.copy()
        others[chosen] = False
        runner = self._choose(w, cand, score, others)
        runner_up = "" if runner is None else (
            f"; next best {t.ids[int(cand[runner])]} at {float(score[runner]):.2f}"
        )  # fmt: skip
        count = int(np.count_nonzero(feasible))
        if cur is not None and i == cur:
            if runner is not None and float(score[runner]) > s - migration:
                gain = float(score[runner]) - (s - migration)
                return (
                    f"kept on {t.ids[i]}: a move to {t.ids[int(cand[runner])]} would gain only "
                    f"{gain:.2f}, not more than the migration cost {migration:.2f}"
                )
            return f"kept on {t.ids[i]}: best of {count} feasible nodes (score {s:.2f}{runner_up})"
        best = f"best of {count} feasible nodes (score {s:.2f}{runner_up})"
        if cur is not None:
            cur_pos = positions(cand, {cur})
            if len(cur_pos) and feasible[cur_pos[0]]:
                here = float(score[cur_pos[0]]) - migration
                return (
                    f"moved from {t.ids[cur]} to {t.ids[i]}: score {s:.2f} beats {here:.2f} "
                    f"by {s - here:.2f}, more than the migration cost {migration:.2f}"
                )
            return f"moved from {t.ids[cur]} (cordoned) to {t.ids[i]}: {best}"
        if slot in self.lost:
            lost_at, why = self.lost[slot]
            reason = f"{why}; rescheduled to {t.ids[i]}: {best}"
            if lost_at is not None and t.nodes[lost_at].region != t.nodes[i].region:
                residency = w.constraints.residency
                allowed = (
                    f", allowed by residency {','.join(sorted(residency))}" if residency else ""
                )
                reason += (
                    f"; cross-region failover {t.nodes[lost_at].region} -> "
                    f"{t.nodes[i].region}{allowed}"
                )
            return reason
        return f"placed on {t.ids[i]}: {best}"

    def _why_unplaceable(self, w: Workload, sig: Signature, exclude: set[int]) -> str:
        return self.table.why_unplaceable(w, sig, (*self.free,), exclude)

    # -- scoring of whole plans -------------------------------------------------------

    def total_score(self, assignments: Sequence[tuple[str, int, str]]) -> float:
        """The objective `place` maximises, evaluated for a given set of assignments."""
        t, wt = self.table, self.weights
        by_workload: dict[str, list[tuple[int, int]]] = {}
        for name, replica, node_id in assignments:
            if name not in self.workloads or node_id not in t.index:
                raise InvalidInput(f"assignment {name}[{replica}] -> {node_id}: unknown name")
            by_workload.setdefault(name, []).append((replica, t.index[node_id]))
        total = 0.0
        for name in self.order:
            w, entries = self.workloads[name], sorted(by_workload.get(name, []))
            if not entries:
                continue
            idx = np.array([i for _, i in entries], np.intp)
            total += sum(float(part.sum()) for part in self._static(w, idx))
            migration = wt.migration + (wt.stateful_migration if w.stateful else 0.0)
            stays = sum(1 for rep, i in entries if self.current.get((name, rep)) == t.ids[i])
            total += migration * stays
            if w.preferences.spread_zones:
                zone_keys = [int(t.zone_key[i]) for _, i in entries]
                total -= wt.spread * (len(zone_keys) - len(set(zone_keys)))
            for _, i in entries:
                self._adjust(i, w, +1, commit=True)
            self.hosts[name] = sorted(i for _, i in entries)
        start = np.maximum(t.base_cpu * t.inv_cpu, t.base_mem * t.inv_mem)
        return total - float(np.sum(wt.load_cost(self.util) - wt.load_cost(start)))
