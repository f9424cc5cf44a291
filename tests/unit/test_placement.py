"""Placement: hard constraints and capacity always hold, the same input gives the same plan,
irrelevant changes and small score noise move nothing, and every decision says why."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgefleet.core.selector import parse_selector
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.placement import (
    Assignment,
    DecisionAction,
    Node,
    Placement,
    PlacementPlan,
    PowerSource,
    Topology,
    Weights,
    energy_term,
    estimate_latency_ms,
    explain,
    place,
    score_placement,
)
from edgefleet.core.workloads.workload import (
    AffinityScope,
    AffinityTerm,
    GeoPoint,
    HardConstraints,
    Preferences,
    ProximityTarget,
    Resources,
    Workload,
)
from edgefleet.errors import InvalidInput

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RESIDENCY = {"eu-west": "eu", "eu-central": "eu", "us-east": "us"}
SELECTORS = ["", "kind=cam", "kind!=gw", "!canary", "kind in (cam,gw)"]
EXAMPLES = 40


@st.composite
def fleets(draw: st.DrawFn, max_size: int = 10, failures: bool = False) -> list[Node]:
    nodes = []
    for i in range(draw(st.integers(1, max_size))):
        region = draw(st.sampled_from(sorted(RESIDENCY)))
        battery = draw(st.booleans())
        acc = draw(st.sampled_from([0, 0, 1, 2]))
        liveness = Liveness.ALIVE
        if failures:
            liveness = draw(
                st.sampled_from([Liveness.ALIVE] * 4 + [Liveness.SUSPECT, Liveness.DEAD])
            )
        nodes.append(
            Node(
                id=f"n{i:02d}",
                region=region,
                zone=f"{region}-{draw(st.sampled_from('ab'))}",
                cpu_millicores=draw(st.sampled_from([1000, 2000, 4000])),
                memory_mb=draw(st.sampled_from([1024, 2048, 4096])),
                labels=draw(
                    st.dictionaries(
                        st.sampled_from(["kind", "canary"]),
                        st.sampled_from(["cam", "gw"]),
                        max_size=2,
                    )
                ),
                residency=RESIDENCY[region] if draw(st.integers(0, 9)) else None,
                location=draw(
                    st.none() | st.builds(GeoPoint, st.floats(-60, 60), st.floats(-170, 170))
                ),
                accelerators=acc,
                accelerator_kind=draw(st.sampled_from(["npu", "gpu"])) if acc else None,
                used_cpu_millicores=draw(st.integers(0, 600)),
                used_memory_mb=draw(st.integers(0, 600)),
                power_source=PowerSource.BATTERY if battery else PowerSource.MAINS,
                battery_pct=draw(st.floats(5, 100)) if battery else None,
                reliability=draw(st.floats(0.5, 1.0)),
                liveness=liveness,
                schedulable=not failures or draw(st.integers(0, 5)) > 0,
            )
        )
    return nodes


@st.composite
def workload_sets(draw: st.DrawFn, max_size: int = 7) -> list[Workload]:
    workloads: list[Workload] = []
    for j in range(draw(st.integers(1, max_size))):
        acc = draw(st.sampled_from([0, 0, 0, 1]))
        residency = draw(st.sampled_from([(), (), ("eu",), ("us",), ("eu", "us")]))
        affinity: tuple[AffinityTerm, ...] = ()
        if j and draw(st.booleans()):
            affinity = (
                AffinityTerm(
                    f"w{draw(st.integers(0, j - 1))}",
                    draw(st.sampled_from(list(AffinityScope))),
                    1.0,
                    anti=draw(st.booleans()),
                ),
            )
        near = tuple(
            ProximityTarget(f"t{k}", GeoPoint(draw(st.floats(-60, 60)), draw(st.floats(-170, 170))))
            for k in range(draw(st.integers(0, 2)))
        )
        workloads.append(
            Workload(
                name=f"w{j}",
                resources=Resources(
                    cpu_millicores=draw(st.integers(100, 1500)),
                    memory_mb=draw(st.integers(64, 1500)),
                    accelerators=acc,
                    accelerator_kind=draw(st.sampled_from([None, "npu"])) if acc else None,
                ),
                replicas=draw(st.integers(0, 3)),
                priority=draw(st.sampled_from([0, 0, 1, 5])),
                constraints=HardConstraints(
                    selector=parse_selector(draw(st.sampled_from(SELECTORS))),
                    regions=frozenset(draw(st.sampled_from([(), (), ("us-east",)]))),
                    residency=frozenset(residency),
                ),
                preferences=Preferences(
                    near=near, affinity=affinity, spread_zones=draw(st.booleans())
                ),
                state_dir="/var/lib/w" if draw(st.booleans()) else None,
                slo_latency_ms=draw(st.sampled_from([None, 20.0])),
            )
        )
    return workloads


def breaks_constraint(w: Workload, node: Node) -> str | None:
    """The rules spelled out independently of the implementation's masks."""
    c, r = w.constraints, w.resources
    if not c.selector.matches(node.labels):
        return "selector"
    if c.regions and node.region not in c.regions:
        return "region"
    if c.zones and node.zone not in c.zones:
        return "zone"
    if c.residency and node.residency not in c.residency:
        return "residency"
    if r.accelerators and node.accelerators < r.accelerators:
        return "accelerators"
    if r.accelerators and r.accelerator_kind and r.accelerator_kind != node.accelerator_kind:
        return "accelerator kind"
    return None


def assert_valid(
    plan: PlacementPlan,
    workloads: Sequence[Workload],
    nodes: Sequence[Node],
    current: Placement = Placement(),
) -> None:
    by_node = {n.id: n for n in nodes}
    by_name = {w.name: w for w in workloads}
    was = {(a.workload, a.replica): a.node_id for a in current.assignments}
    use: Counter[tuple[str, str]] = Counter()
    per_workload: Counter[str] = Counter()
    for a in plan.placement.assignments:
        w, node = by_name[a.workload], by_node[a.node_id]
        assert a.replica < w.replicas
        assert breaks_constraint(w, node) is None, (a, breaks_constraint(w, node))
        stayed = was.get((a.workload, a.replica)) == node.id
        if node.liveness is Liveness.SUSPECT:
            assert stayed, f"new replica on suspect node {node.id}"
        else:
            assert node.liveness is Liveness.ALIVE, f"replica on dead node {node.id}"
            assert node.schedulable or stayed, f"new replica on cordoned node {node.id}"
        per_workload[a.workload] += 1
        use[node.id, "cpu"] += w.resources.cpu_millicores
        use[node.id, "mem"] += w.resources.memory_mb
        use[node.id, "acc"] += w.resources.accelerators
    for node in nodes:
        assert use[node.id, "cpu"] + node.used_cpu_millicores <= node.cpu_millicores
        assert use[node.id, "mem"] + node.used_memory_mb <= node.memory_mb
        assert use[node.id, "acc"] <= node.accelerators
    for w in workloads:
        on = [a.node_id for a in plan.placement.assignments if a.workload == w.name]
        assert len(on) == len(set(on)), "two replicas of one workload on one node"
        missing = [d for d in plan.unplaceable if d.workload == w.name]
        assert per_workload[w.name] + len(missing) == w.replicas
    assert all(d.reason for d in plan.decisions)


def assignments(plan: PlacementPlan) -> set[tuple[str, int, str]]:
    return {(a.workload, a.replica, a.node_id) for a in plan.placement.assignments}


def relocated(plan: PlacementPlan) -> bool:
    return any("moved aside" in d.reason or "displaced" in d.reason for d in plan.decisions)


# -- properties ----------------------------------------------------------------------------


@settings(max_examples=EXAMPLES)
@given(workload_sets(), fleets())
def test_a_plan_never_breaks_a_hard_constraint_or_capacity(
    workloads: list[Workload], nodes: list[Node]
) -> None:
    plan = place(workloads, nodes, Topology(), Placement(), NOW)
    assert_valid(plan, workloads, nodes)


@settings(max_examples=EXAMPLES)
@given(workload_sets(), fleets(), st.data())
def test_replanning_after_failures_never_breaks_a_hard_constraint(
    workloads: list[Workload], nodes: list[Node], data: st.DataObject
) -> None:
    before = place(workloads, nodes, Topology(), Placement(), NOW)
    changed = [
        dataclasses.replace(
            n,
            liveness=data.draw(
                st.sampled_from([Liveness.ALIVE] * 3 + [Liveness.SUSPECT, Liveness.DEAD])
            ),
            schedulable=data.draw(st.integers(0, 4)) > 0,
        )
        for n in nodes
    ]
    after = place(workloads, changed, Topology(), before.placement, NOW)
    assert_valid(after, workloads, changed, before.placement)
    held = [d for d in after.decisions if d.action is DecisionAction.HOLD]
    suspect = {n.id for n in changed if n.liveness is Liveness.SUSPECT}
    assert all(d.node_id in suspect for d in held)
    assert after.placement.generation == before.placement.generation + sum(
        1 for d in after.decisions if d.action in (DecisionAction.MOVE, DecisionAction.PLACE)
    )


@settings(max_examples=EXAMPLES)
@given(workload_sets(), fleets(failures=True), st.randoms(use_true_random=False))
def test_the_same_input_in_any_order_gives_the_same_plan(
    workloads: list[Workload], nodes: list[Node], rng: random.Random
) -> None:
    plan = place(workloads, nodes, Topology(), Placement(), NOW)
    assert place(workloads, nodes, Topology(), Placement(), NOW) == plan
    shuffled_w, shuffled_n = list(workloads), list(nodes)
    rng.shuffle(shuffled_w)
    rng.shuffle(shuffled_n)
    assert place(shuffled_w, shuffled_n, Topology(), Placement(), NOW) == plan


@settings(max_examples=EXAMPLES)
@given(workload_sets(), fleets())
def test_adding_an_unusable_node_changes_nothing(
    workloads: list[Workload], nodes: list[Node]
) -> None:
    plan = place(workloads, nodes, Topology(), Placement(), NOW)
    dead = Node("zz-dead", "eu-west", "eu-west-a", 8000, 8000, liveness=Liveness.DEAD)
    tiny = Node("zz-tiny", "eu-west", "eu-west-a", 1, 1)
    again = place(workloads, [*nodes, dead, tiny], Topology(), Placement(), NOW)
    assert assignments(again) == assignments(plan)


@settings(max_examples=EXAMPLES)
@given(workload_sets(), fleets())
def test_adding_a_node_worse_everywhere_changes_nothing(
    workloads: list[Workload], nodes: list[Node]
) -> None:
    # Reliability weighs so much that a node with none loses to every other candidate.
    weights = Weights(reliability=100.0)
    plan = place(workloads, nodes, Topology(), Placement(), NOW, weights)
    assume(not relocated(plan))
    worst = dataclasses.replace(nodes[0], id="zz-worst", reliability=0.0)
    again = place(workloads, [*nodes, worst], Topology(), Placement(), NOW, weights)
    if not plan.unplaceable:
        assert assignments(again) == assignments(plan)
    else:  # it may take (or free room for) a replica that fitted nowhere, nothing else
        assert len(again.placement.assignments) >= len(plan.placement.assignments)
        assert len(again.unplaceable) <= len(plan.unplaceable)


@settings(max_examples=EXAMPLES)
@given(workload_sets(), fleets())
def test_a_plan_is_a_fixpoint(workloads: list[Workload], nodes: list[Node]) -> None:
    plan = place(workloads, nodes, Topology(), Placement(), NOW)
    again = place(workloads, nodes, Topology(), plan.placement, NOW)
    assert again.placement == plan.placement
    assert not again.moves


@settings(max_examples=EXAMPLES)
@given(workload_sets(), fleets(), st.randoms(use_true_random=False))
def test_score_noise_below_the_migration_cost_moves_nothing(
    workloads: list[Workload], nodes: list[Node], rng: random.Random
) -> None:
    plan = place(workloads, nodes, Topology(), Placement(), NOW)
    assume(not relocated(plan))
    # Each node's score moves by at most 2 * 0.1 (reliability) + 0.05 (energy) < 1 / 2.
    noisy = [
        dataclasses.replace(
            n,
            reliability=min(1.0, max(0.0, n.reliability + rng.uniform(-0.1, 0.1))),
            battery_pct=None if n.battery_pct is None else n.battery_pct * rng.uniform(0.95, 1.0),
        )
        for n in nodes
    ]
    again = place(workloads, noisy, Topology(), plan.placement, NOW)
    assert assignments(again) == assignments(plan)
    assert not again.moves


@settings(max_examples=EXAMPLES)
@given(workload_sets(), fleets())
def test_the_total_score_is_the_sum_of_the_picks(
    workloads: list[Workload], nodes: list[Node]
) -> None:
    plan = place(workloads, nodes, Topology(), Placement(), NOW)
    assume(not relocated(plan))
    picks = sum(d.terms.total for d in plan.decisions if d.terms is not None)
    total = score_placement(plan.placement, workloads, nodes, Topology(), Placement(), NOW)
    assert total == pytest.approx(picks, abs=1e-6)


# -- scenarios -----------------------------------------------------------------------------


def node(node_id: str, region: str = "eu-west", zone: str = "a", **kw: object) -> Node:
    defaults: dict[str, object] = {
        "cpu_millicores": 4000,
        "memory_mb": 4096,
        "residency": RESIDENCY.get(region),
    }
    return Node(node_id, region, f"{region}-{zone}", **{**defaults, **kw})  # type: ignore[arg-type]


def workload(name: str, cpu: int = 500, **kw: object) -> Workload:
    return Workload(name, Resources(cpu, 256), **kw)  # type: ignore[arg-type]


def test_residency_is_never_crossed_and_the_refusal_says_why() -> None:
    w = workload("eu-only", constraints=HardConstraints(residency=frozenset({"eu"})))
    nodes = [node("us-1", "us-east"), node("eu-1", liveness=Liveness.DEAD)]
    plan = place([w], nodes, Topology(), Placement(), NOW)
    (d,) = plan.decisions
    assert d.action is DecisionAction.UNPLACEABLE and d.node_id is None
    assert "residency in (eu)" in d.reason and "not alive" in d.reason


def test_failover_reschedules_within_residency_and_reports_cross_region() -> None:
    w = workload("eu-only", constraints=HardConstraints(residency=frozenset({"eu"})))
    nodes = [node("eu-1"), node("eu-2", "eu-central"), node("us-1", "us-east")]
    first = place([w], nodes, Topology(), Placement(), NOW)
    home = first.placement.nodes_of("eu-only")[0]
    dead = [dataclasses.replace(n, liveness=Liveness.DEAD) if n.id == home else n for n in nodes]
    second = place([w], dead, Topology(), first.placement, NOW)
    (d,) = second.decisions
    assert d.action is DecisionAction.MOVE and d.node_id in {"eu-1", "eu-2"} - {home}
    assert f"node {home} is dead" in d.reason and "cross-region failover" in d.reason
    assert d.generation == first.placement.generation + 1


def test_proximity_picks_the_node_nearest_the_data() -> None:
    munich, new_york = GeoPoint(48.1, 11.6), GeoPoint(40.7, -74.0)
    w = workload("near", preferences=Preferences(near=(ProximityTarget("cams", munich),)))
    nodes = [node("far", location=new_york), node("close", location=GeoPoint(48.2, 11.5))]
    (d,) = place([w], nodes, Topology(), Placement(), NOW).decisions
    assert d.node_id == "close"
    assert d.terms is not None and d.terms.proximity > 3.5


def test_measured_latency_overrides_distance() -> None:
    w = workload("near", preferences=Preferences(near=(ProximityTarget("users"),)))
    nodes = [node("a", location=GeoPoint(0, 0)), node("b", location=GeoPoint(0, 0))]
    topology = Topology(
        sources={"users": GeoPoint(0, 0)}, latency_ms={("a", "users"): 80.0, ("b", "users"): 3.0}
    )
    (d,) = place([w], nodes, topology, Placement(), NOW).decisions
    assert d.node_id == "b"


def test_energy_prefers_mains_and_full_batteries() -> None:
    mains = node("mains")
    low = node("low", power_source=PowerSource.BATTERY, battery_pct=20.0)
    assert energy_term(mains, NOW) == 1.0
    assert energy_term(low, NOW) < energy_term(dataclasses.replace(low, battery_pct=90.0), NOW)
    dying = dataclasses.replace(low, battery_pct=90.0, battery_empty_at=NOW + timedelta(hours=1))
    assert energy_term(dying, NOW) < energy_term(dataclasses.replace(low, battery_pct=90.0), NOW)
    (d,) = place([workload("w")], [low, mains], Topology(), Placement(), NOW).decisions
    assert d.node_id == "mains"


def test_replicas_spread_over_zones_when_asked() -> None:
    w = workload("spread", replicas=2, preferences=Preferences(spread_zones=True))
    nodes = [node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b", reliability=0.6)]
    plan = place([w], nodes, Topology(), Placement(), NOW)
    zones = {n.zone for n in nodes if n.id in plan.placement.nodes_of("spread")}
    assert len(zones) == 2


def test_load_spreads_once_nodes_pass_the_target_utilisation() -> None:
    workloads = [workload(f"w{i}", cpu=1000) for i in range(6)]
    nodes = [node("a"), node("b", reliability=0.95)]
    plan = place(workloads, nodes, Topology(), Placement(), NOW)
    per_node = Counter(a.node_id for a in plan.placement.assignments)
    assert per_node == {"a": 3, "b": 3}


def test_higher_priority_displaces_lower_only_when_nothing_else_fits() -> None:
    low = workload("low", cpu=3000, priority=0)
    high = workload("high", cpu=3000, priority=10)
    nodes = [node("only")]
    first = place([low], nodes, Topology(), Placement(), NOW)
    second = place([low, high], nodes, Topology(), first.placement, NOW)
    by_name = {d.workload: d for d in second.decisions}
    assert by_name["high"].node_id == "only"
    assert by_name["low"].action is DecisionAction.UNPLACEABLE
    assert "displaced from only by higher-priority workload high" in by_name["low"].reason
    roomy = place([low, high], [*nodes, node("other")], Topology(), first.placement, NOW)
    assert {d.workload: d.action for d in roomy.decisions} == {
        "high": DecisionAction.PLACE,
        "low": DecisionAction.KEEP,
    }


def test_a_replica_that_fits_nowhere_pushes_one_aside() -> None:
    small = workload("a-small", cpu=1500)
    big = workload("b-big", cpu=3500)
    nodes = [node("best", reliability=1.0), node("other", reliability=0.9)]
    plan = place([small, big], nodes, Topology(), Placement(), NOW)
    assert not plan.unplaceable
    assert {d.workload: d.node_id for d in plan.decisions} == {"b-big": "best", "a-small": "other"}
    again = place([small, big], nodes, Topology(), plan.placement, NOW)
    assert again.placement == plan.placement


def test_suspect_nodes_hold_their_replicas_and_take_nothing_new() -> None:
    nodes = [node("a"), node("b", reliability=0.5)]
    first = place([workload("w")], nodes, Topology(), Placement(), NOW)
    assert first.placement.nodes_of("w") == ("a",)
    suspect = [dataclasses.replace(nodes[0], liveness=Liveness.SUSPECT), nodes[1]]
    second = place([workload("w"), workload("v")], suspect, Topology(), first.placement, NOW)
    by_name = {d.workload: d for d in second.decisions}
    assert by_name["w"].action is DecisionAction.HOLD and by_name["w"].node_id == "a"
    assert by_name["v"].node_id == "b"


def test_cordoned_nodes_are_drained() -> None:
    nodes = [node("a"), node("b", reliability=0.5)]
    first = place([workload("w")], nodes, Topology(), Placement(), NOW)
    cordoned = [dataclasses.replace(nodes[0], schedulable=False), nodes[1]]
    (d,) = place([workload("w")], cordoned, Topology(), first.placement, NOW).decisions
    assert d.action is DecisionAction.MOVE and d.node_id == "b" and "cordoned" in d.reason
    alone = place([workload("w")], cordoned[:1], Topology(), first.placement, NOW)
    assert alone.decisions[0].action is DecisionAction.KEEP


def test_scaling_down_and_deleting_remove_replicas() -> None:
    nodes = [node("a"), node("b")]
    first = place([workload("w", replicas=2)], nodes, Topology(), Placement(), NOW)
    second = place([workload("w", replicas=1)], nodes, Topology(), first.placement, NOW)
    removed = [d for d in second.decisions if d.action is DecisionAction.REMOVE]
    assert [(d.workload, d.replica) for d in removed] == [("w", 1)]
    assert len(second.placement.assignments) == 1
    third = place([], nodes, Topology(), second.placement, NOW)
    assert third.placement.assignments == ()
    assert "workload deleted" in third.decisions[0].reason


def test_constraints_that_change_move_the_replica() -> None:
    nodes = [node("a", labels={"kind": "cam"}), node("b", labels={"kind": "gw"})]
    cams = HardConstraints(selector=parse_selector("kind=cam"))
    first = place([workload("w", constraints=cams)], nodes, Topology(), Placement(), NOW)
    gws = HardConstraints(selector=parse_selector("kind=gw"))
    (d,) = place(
        [workload("w", constraints=gws)], nodes, Topology(), first.placement, NOW
    ).decisions
    assert d.node_id == "b" and "no longer satisfies selector kind=gw" in d.reason


def test_explain_scores_each_candidate_and_names_what_excluded_the_rest() -> None:
    w = workload("w", constraints=HardConstraints(residency=frozenset({"eu"})))
    nodes = [
        node("best"),
        node("second", reliability=0.7),
        node("us", "us-east"),
        node("dead", liveness=Liveness.DEAD),
        node("full", used_cpu_millicores=3900),
    ]
    explanation = explain("w", [w], nodes, Topology(), Placement(), NOW)
    (decision,) = explanation.decisions
    (rows,) = explanation.candidates
    by_id = {r.node_id: r for r in rows}
    assert rows[0].node_id == decision.node_id == "best"
    assert rows[0].outcome == "chosen for replica 0"
    assert rows[0].terms is not None and decision.terms == rows[0].terms
    assert by_id["second"].outcome.startswith("lost to best by")
    assert by_id["us"].excluded_by == "residency in (eu)"
    assert by_id["dead"].excluded_by == "node is dead"
    assert by_id["full"].excluded_by is not None and "capacity" in by_id["full"].excluded_by
    with pytest.raises(InvalidInput):
        explain("nope", [w], nodes, Topology(), Placement(), NOW)


def test_affinity_draws_and_anti_affinity_repels() -> None:
    db = workload("db")
    near = workload("app", preferences=Preferences(affinity=(AffinityTerm("db"),)))
    away = workload("rival", preferences=Preferences(affinity=(AffinityTerm("db", anti=True),)))
    nodes = [node("a"), node("b"), node("c")]
    plan = place([db, near, away], nodes, Topology(), Placement(), NOW)
    where = {a.workload: a.node_id for a in plan.placement.assignments}
    assert where["app"] == where["db"] and where["rival"] != where["db"]


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidInput, match="listed twice"):
        place([], [node("a"), node("a")], Topology(), Placement(), NOW)
    with pytest.raises(InvalidInput, match="listed twice"):
        place([workload("w"), workload("w")], [node("a")], Topology(), Placement(), NOW)
    with pytest.raises(InvalidInput, match="must be > 0"):
        place([], [node("a", cpu_millicores=0)], Topology(), Placement(), NOW)
    twice = Placement((Assignment("w", 0, "a", 1), Assignment("w", 0, "a", 2)), 2)
    with pytest.raises(InvalidInput, match="twice"):
        place([workload("w")], [node("a")], Topology(), twice, NOW)
    with pytest.raises(InvalidInput):
        Weights(proximity=-1)


def test_an_empty_fleet_leaves_every_replica_unplaceable() -> None:
    plan = place([workload("w", replicas=2)], [], Topology(), Placement(), NOW)
    assert [d.action for d in plan.decisions] == [DecisionAction.UNPLACEABLE] * 2
    assert plan.decisions[0].reason == "no node fits: the fleet has no nodes"


def test_latency_estimate_grows_with_distance() -> None:
    here = GeoPoint(48.1, 11.6)
    assert estimate_latency_ms(here, here) == pytest.approx(2.0)
    assert estimate_latency_ms(here, GeoPoint(52.5, 13.4)) < estimate_latency_ms(
        here, GeoPoint(40.7, -74.0)
    )
