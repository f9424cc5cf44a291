"""Planned migration: the step table, one step at a time from what the nodes report, the
10 -> 50 -> 100 traffic schedule, aborts back to the source at any step, and the
fleet-wide and per-zone limits."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.migration import (
    TERMINAL,
    TRANSITIONS,
    CheckpointStatus,
    CopyState,
    CopyStatus,
    Migration,
    MigrationLimits,
    MigrationObservation,
    MigrationState,
    MigrationTiming,
    MigrationTrigger,
    abort_migration,
    admit_migrations,
    advance_migration,
    move_to,
    transition,
)
from edgefleet.errors import IllegalTransition

T0 = datetime(2026, 5, 1, tzinfo=UTC)
TIMING = MigrationTiming(shift_step_s=3, drain_s=2, step_timeout_s=60)
SHA = "ab" * 32
S = MigrationState


def migration(stateful: bool = True, **kw: object) -> Migration:
    fields: dict[str, object] = {
        "id": "mig-1", "workload": "w", "replica": 0, "source": "a", "target": "b",
        "trigger": MigrationTrigger.OPERATOR, "reason": "asked", "stateful": stateful,
        "created_by": "op", "created_at": T0, "source_generation": 3, **kw,
    }  # fmt: skip
    return Migration(**fields)  # type: ignore[arg-type]


def observe(
    copy: CopyState | None = None,
    healthy: bool = False,
    restored: str | None = None,
    checkpoint: CheckpointStatus | None = None,
    stored: bool = False,
    generation: int = 4,
    **kw: object,
) -> MigrationObservation:
    status = None if copy is None else CopyStatus(generation, copy, healthy, "", restored)
    fields: dict[str, object] = {
        "source_liveness": Liveness.ALIVE, "target_liveness": Liveness.ALIVE,
        "target_copy": status, "checkpoint": checkpoint, "checkpoint_stored": stored, **kw,
    }  # fmt: skip
    return MigrationObservation(**fields)  # type: ignore[arg-type]


def started(stateful: bool = True) -> Migration:
    return move_to(migration(stateful), S.PRESTAGING, T0, "admitted", generation=4)


def test_the_table_allows_only_forward_steps_or_abort() -> None:
    for state, nexts in TRANSITIONS.items():
        for new in MigrationState:
            if new in nexts:
                assert transition(state, new) is new
            else:
                with pytest.raises(IllegalTransition):
                    transition(state, new)
        if state not in TERMINAL:
            assert S.ABORTED in nexts
    assert all(not TRANSITIONS[s] for s in TERMINAL)


def test_a_stateful_migration_walks_every_step_and_shifts_traffic_10_50_100() -> None:
    m = started()
    t = T0
    m = advance_migration(m, observe(CopyState.FETCHING), t, TIMING)
    assert m.state is S.PRESTAGING  # still fetching: nothing to do yet
    m = advance_migration(m, observe(CopyState.STAGED), t, TIMING)
    assert m.state is S.CHECKPOINTING
    reported = CheckpointStatus(SHA, 1234)
    m = advance_migration(m, observe(CopyState.STAGED, checkpoint=reported), t, TIMING)
    assert m.state is S.CHECKPOINTING  # the archive is not in the blob store yet
    m = advance_migration(m, observe(CopyState.STAGED, checkpoint=reported, stored=True), t,
                          TIMING)  # fmt: skip
    assert (m.state, m.checkpoint_sha256, m.checkpoint_size_bytes) == (S.TRANSFERRING, SHA, 1234)
    m = advance_migration(m, observe(CopyState.STAGED, restored=SHA), t, TIMING)
    assert m.state is S.STARTING
    m = advance_migration(m, observe(CopyState.STARTING), t, TIMING)
    assert m.state is S.STARTING
    healthy = observe(CopyState.RUNNING, healthy=True)
    weights = []
    for _ in range(12):
        m = advance_migration(m, healthy, t, TIMING)
        weights.append((m.state, m.target_weight_pct, m.source_weight_pct))
        t += timedelta(seconds=1)
    assert (S.SHIFTING, 10, 90) in weights and (S.SHIFTING, 50, 50) in weights
    assert (S.DRAINING, 100, 0) in weights
    assert m.state is S.COMPLETED
    assert [step.state for step in m.steps] == [
        S.PRESTAGING, S.CHECKPOINTING, S.TRANSFERRING, S.STARTING, S.SHIFTING, S.SHIFTING,
        S.DRAINING, S.COMPLETED]  # fmt: skip
    assert [step.weight_pct for step in m.steps][4:7] == [10, 50, 100]
    assert all(step.detail for step in m.steps)


def test_a_stateless_migration_skips_the_state_transfer() -> None:
    m = advance_migration(started(stateful=False), observe(CopyState.STAGED), T0, TIMING)
    assert m.state is S.STARTING and "stateless" in m.steps[-1].detail


def test_nothing_changes_returns_the_same_object() -> None:
    m = started()
    assert advance_migration(m, observe(CopyState.FETCHING), T0, TIMING) is m
    pending = migration()
    assert advance_migration(pending, observe(), T0, TIMING) is pending


@pytest.mark.parametrize(
    ("obs", "why"),
    [
        (observe(source_liveness=Liveness.DEAD), "source a is dead"),
        (observe(target_liveness=Liveness.DEAD), "target b is dead"),
        (observe(CopyState.FAILED), "the copy on b failed"),
        (observe(still_on_source=False), "no longer has the replica on a"),
    ],
)
def test_failures_abort_back_to_the_source(obs: MigrationObservation, why: str) -> None:
    m = advance_migration(started(), obs, T0, TIMING)
    assert m.state is S.ABORTED and m.source_weight_pct == 100 and m.target_weight_pct == 0
    assert why in m.steps[-1].detail and "traffic back on a" in m.steps[-1].detail


def test_an_unhealthy_target_during_the_shift_aborts() -> None:
    m = dataclasses.replace(started(), state=S.SHIFTING, weight_pct=50)
    m = advance_migration(m, observe(CopyState.BACKOFF), T0, TIMING)
    assert m.state is S.ABORTED and "became unhealthy" in m.steps[-1].detail


def test_a_failed_checkpoint_and_a_step_timeout_abort() -> None:
    m = move_to(started(), S.CHECKPOINTING, T0, "checkpoint")
    failed = advance_migration(m, observe(checkpoint=CheckpointStatus(None, None, "disk full")),
                               T0, TIMING)  # fmt: skip
    assert failed.state is S.ABORTED and "disk full" in failed.steps[-1].detail
    late = advance_migration(m, observe(CopyState.STAGED), T0 + timedelta(seconds=61), TIMING)
    assert late.state is S.ABORTED and "did not finish within 60s" in late.steps[-1].detail


def test_a_copy_of_another_generation_is_not_this_migrations_copy() -> None:
    m = advance_migration(started(), observe(CopyState.STAGED, generation=9), T0, TIMING)
    assert m.state is S.PRESTAGING


def test_abort_is_refused_once_finished() -> None:
    done = abort_migration(started(), T0, "operator")
    with pytest.raises(IllegalTransition):
        abort_migration(done, T0, "again")


def pending(i: int, source: str, target: str, workload: str = "w") -> Migration:
    return migration(id=f"m{i}", workload=workload, replica=i, source=source, target=target,
                     created_at=T0 + timedelta(seconds=i))  # fmt: skip


ZONES = {"a1": "za", "a2": "za", "b1": "zb", "b2": "zb", "c1": "zc", "c2": "zc"}


def test_admission_respects_the_fleet_and_zone_limits_oldest_first() -> None:
    queue = [pending(1, "a1", "b1"), pending(2, "a2", "b2"), pending(3, "c1", "c2")]
    admission = admit_migrations(queue, queue, ZONES, MigrationLimits(2, 1))
    assert admission.admitted == ("m1", "m3")  # m2 shares zones za and zb with m1
    assert "zone za" in admission.deferred["m2"]
    running = [dataclasses.replace(queue[0], state=S.SHIFTING)]
    fleet = admit_migrations(queue[1:], running + queue[1:], ZONES, MigrationLimits(1, 5))
    assert fleet.admitted == () and "fleet-wide limit of 1" in fleet.deferred["m3"]


def test_one_migration_per_replica_at_a_time() -> None:
    first, second = pending(1, "a1", "b1"), pending(2, "c1", "c2")
    running = [dataclasses.replace(first, state=S.STARTING)]
    again = dataclasses.replace(first, id="m9", created_at=T0 + timedelta(seconds=9))
    admission = admit_migrations([again, second], running, ZONES, MigrationLimits(5, 5))
    assert admission.admitted == ("m2",) and "in progress" in admission.deferred["m9"]


@given(st.lists(st.tuples(st.sampled_from(sorted(ZONES)), st.sampled_from(sorted(ZONES))),
                max_size=12), st.integers(1, 4), st.integers(1, 3))  # fmt: skip
def test_admission_never_exceeds_a_limit(
    pairs: list[tuple[str, str]], max_active: int, per_zone: int
) -> None:
    queue = [pending(i, s, t) for i, (s, t) in enumerate(pairs) if s != t]
    admitted = set(admit_migrations(queue, queue, ZONES, MigrationLimits(max_active, per_zone))
                   .admitted)  # fmt: skip
    chosen = [m for m in queue if m.id in admitted]
    assert len(chosen) <= max_active
    for zone in set(ZONES.values()):
        touching = [m for m in chosen if zone in (ZONES[m.source], ZONES[m.target])]
        assert len(touching) <= per_zone
