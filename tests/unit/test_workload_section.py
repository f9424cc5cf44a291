"""The desired state's `workloads` section and fencing: a node holds exactly its placed
replicas (plus the copies it receives by migration), and stops every copy not listed at
its generation; endpoints split each replica's traffic by the migration's weight."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.workloads.endpoints import (
    EndpointRole,
    ReplicaCopy,
    pick_weighted,
    service_endpoints,
)
from edgefleet.core.workloads.migration import Migration, MigrationState, MigrationTrigger
from edgefleet.core.workloads.section import (
    NodeAssignment,
    ReplicaPhase,
    WorkloadSource,
    fence_replicas,
    parse_workloads_section,
    render_workloads_section,
    replicas_for_node,
)
from edgefleet.errors import InvalidInput

T0 = datetime(2026, 5, 1, tzinfo=UTC)
DOC = {"name": "w", "resources": {"cpu_millicores": 100, "memory_mb": 64}}
SOURCES = {"w": WorkloadSource(DOC, ({"name": "r", "version": "1.0.0", "targets": []},))}
PLACED = [NodeAssignment("w", 0, "a", 5), NodeAssignment("w", 1, "b", 6)]


def migration(state: MigrationState, **kw: object) -> Migration:
    return Migration(
        "mig-1",
        "w",
        0,
        "a",
        "c",
        MigrationTrigger.OPERATOR,
        "",
        True,
        "op",
        T0,
        5,
        state=state,
        generation=9,
        **kw,  # type: ignore[arg-type]
    )


def test_a_node_holds_its_placed_replicas_at_their_generations() -> None:
    entries = replicas_for_node("a", PLACED, [], SOURCES)
    assert [(e.key, e.generation, e.phase) for e in entries] == [(("w", 0), 5, ReplicaPhase.RUN)]
    assert replicas_for_node("z", PLACED, [], SOURCES) == ()
    assert replicas_for_node("a", PLACED, [], {}) == ()  # workload deleted: nothing to run


def test_a_migration_stages_then_runs_a_copy_on_its_target_and_checkpoints_the_source() -> None:
    checkpointing = migration(MigrationState.CHECKPOINTING)
    [source] = replicas_for_node("a", PLACED, [checkpointing], SOURCES)
    assert source.checkpoint_migration == "mig-1" and source.generation == 5
    [staged] = replicas_for_node("c", PLACED, [checkpointing], SOURCES)
    assert (staged.phase, staged.generation, staged.migration) == (ReplicaPhase.STAGE, 9,
                                                                  "mig-1")  # fmt: skip
    assert staged.restore is None
    transferring = migration(MigrationState.TRANSFERRING, checkpoint_sha256="ab" * 32,
                             checkpoint_size_bytes=10)  # fmt: skip
    [restoring] = replicas_for_node("c", PLACED, [transferring], SOURCES)
    assert restoring.restore == {"migration": "mig-1", "sha256": "ab" * 32, "size_bytes": 10}
    assert restoring.phase is ReplicaPhase.STAGE
    [running] = replicas_for_node("c", PLACED, [migration(MigrationState.SHIFTING)], SOURCES)
    assert running.phase is ReplicaPhase.RUN
    assert replicas_for_node("c", PLACED, [migration(MigrationState.ABORTED)], SOURCES) == ()


def test_the_section_round_trips_and_is_absent_when_empty() -> None:
    entries = replicas_for_node(
        "c", PLACED, [migration(MigrationState.TRANSFERRING, checkpoint_sha256="cd" * 32)], SOURCES
    )
    section = render_workloads_section(entries)
    assert section is not None and parse_workloads_section(section) == entries
    assert render_workloads_section([]) is None
    assert parse_workloads_section(None) == ()


def test_a_malformed_section_is_refused() -> None:
    with pytest.raises(InvalidInput):
        parse_workloads_section({"replicas": [{"workload": "w"}]})
    twice = render_workloads_section(replicas_for_node("a", PLACED, [], SOURCES))
    assert twice is not None
    with pytest.raises(InvalidInput, match="twice"):
        parse_workloads_section({"replicas": twice["replicas"] * 2})


@given(
    st.dictionaries(st.tuples(st.sampled_from("uvw"), st.integers(0, 3)), st.integers(1, 9)),
    st.dictionaries(st.tuples(st.sampled_from("uvw"), st.integers(0, 3)), st.integers(1, 9)),
)
def test_fencing_keeps_exactly_the_copies_listed_at_their_generation(
    wanted: dict[tuple[str, int], int], running: dict[tuple[str, int], int]
) -> None:
    verdicts = fence_replicas(wanted, running)
    assert {(v.workload, v.replica) for v in verdicts} == set(running)
    for v in verdicts:
        assert v.keep == (wanted.get((v.workload, v.replica)) == v.generation)


def copy(replica: int, node: str, healthy: bool = True, alive: bool = True) -> ReplicaCopy:
    return ReplicaCopy(replica, node, 1, "127.0.0.1", 8000 + ord(node[0]), healthy, alive)


def test_endpoints_give_each_replica_weight_100_split_during_a_migration() -> None:
    primaries = [copy(0, "a"), copy(1, "b")]
    plain = service_endpoints(primaries, [])
    assert [(e.node_id, e.weight) for e in plain] == [("a", 100), ("b", 100)]
    for weight in (10, 50, 100):
        m = migration(MigrationState.SHIFTING, weight_pct=weight)
        found = service_endpoints(primaries, [(copy(0, "c"), m)])
        by_node = {e.node_id: (e.weight, e.role) for e in found}
        assert by_node["a"] == (100 - weight, EndpointRole.PRIMARY)
        assert by_node["c"] == (weight, EndpointRole.MIGRATION_TARGET)
        assert by_node["b"] == (100, EndpointRole.PRIMARY)
    aborted = migration(MigrationState.ABORTED, weight_pct=50)
    assert {e.node_id for e in service_endpoints(primaries, [(copy(0, "c"), aborted)])} == {
        "a", "b"}  # fmt: skip


def test_unhealthy_or_dead_copies_get_no_traffic_and_unknown_ports_are_left_out() -> None:
    found = service_endpoints([copy(0, "a", healthy=False), copy(1, "b", alive=False)], [])
    assert [(e.weight, e.healthy) for e in found] == [(0, False), (0, False)]
    unreported = dataclasses.replace(copy(0, "a"), port=None)
    assert service_endpoints([unreported], []) == ()
    assert service_endpoints([copy(0, "a")], [])[0].url == "http://127.0.0.1:8097"


@given(st.lists(st.integers(0, 100), min_size=1, max_size=6),
       st.floats(min_value=0, max_value=1, exclude_max=True))  # fmt: skip
def test_pick_weighted_picks_only_weighted_endpoints(weights: list[int], u: float) -> None:
    index = pick_weighted(weights, u)
    if sum(weights) == 0:
        assert index is None
    else:
        assert index is not None and weights[index] > 0


def test_pick_weighted_follows_the_weights() -> None:
    picks = [pick_weighted([90, 10], i / 1000) for i in range(1000)]
    assert picks.count(1) == 100
