"""Planned migration: moving one replica of a workload to another node without losing its
state or dropping traffic. The steps are a state machine (a table of legal moves and one
`transition()`), and `advance_migration` decides the next step from what the nodes report.

    pending ─▶ prestaging ─▶ checkpointing ─▶ transferring ─▶ starting ─▶ shifting ─▶ draining
       │          │ (stateless) ───────────────────────────────▲           10→50→100%     │
       └──────────┴───────── any step: abort (back to the source) ───────────────────────┴─▶ aborted
                                                                                 completed ◀┘

    pending        waiting for the fleet-wide and per-zone migration limits
    prestaging     the target fetches and verifies the release's artifacts (TUF + delivery)
                   without starting anything
    checkpointing  the source runs its checkpoint hook, archives the state directory and
                   uploads it to the control plane (skipped for stateless workloads)
    transferring   the target downloads the archive, checks its sha256 and unpacks it
    starting       the target starts its copy (a placement generation of its own) and must
                   pass its health check
    shifting       the published endpoints give the target 10%, 50%, then 100% of the
                   replica's traffic, `shift_step_s` each, while it stays healthy
    draining       the source gets no new traffic; after `drain_s` the placement moves the
                   replica to the target (commit) and the source stops its copy (fencing)

Abort, at any step before the commit, removes the target's copy and gives all traffic back
to the source, which never stopped. A step that does not finish within `step_timeout_s`, a
copy that fails, or a node that dies aborts the migration with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.errors import IllegalTransition, InvalidInput

WEIGHT_SCHEDULE_PCT = (10, 50, 100)


class MigrationState(StrEnum):
    PENDING = "pending"
    PRESTAGING = "prestaging"
    CHECKPOINTING = "checkpointing"
    TRANSFERRING = "transferring"
    STARTING = "starting"
    SHIFTING = "shifting"
    DRAINING = "draining"
    COMPLETED = "completed"
    ABORTED = "aborted"


class MigrationTrigger(StrEnum):
    OPERATOR = "operator"  # edgefleet workloads migrate
    REBALANCE = "rebalance"  # placement found a node better by more than the migration cost
    FORECAST = "forecast"  # the source's battery or load forecast crosses a threshold


_S = MigrationState
TRANSITIONS: Mapping[MigrationState, frozenset[MigrationState]] = {
    _S.PENDING: frozenset({_S.PRESTAGING, _S.ABORTED}),
    _S.PRESTAGING: frozenset({_S.CHECKPOINTING, _S.STARTING, _S.ABORTED}),
    _S.CHECKPOINTING: frozenset({_S.TRANSFERRING, _S.ABORTED}),
    _S.TRANSFERRING: frozenset({_S.STARTING, _S.ABORTED}),
    _S.STARTING: frozenset({_S.SHIFTING, _S.ABORTED}),
    _S.SHIFTING: frozenset({_S.SHIFTING, _S.DRAINING, _S.ABORTED}),
    _S.DRAINING: frozenset({_S.COMPLETED, _S.ABORTED}),
    _S.COMPLETED: frozenset(),
    _S.ABORTED: frozenset(),
}
TERMINAL = frozenset({_S.COMPLETED, _S.ABORTED})
# Steps in which the target holds a copy of the replica, and in which that copy runs.
TARGET_HOLDS = frozenset({_S.PRESTAGING, _S.CHECKPOINTING, _S.TRANSFERRING, _S.STARTING,
                          _S.SHIFTING, _S.DRAINING})  # fmt: skip
TARGET_RUNS = frozenset({_S.STARTING, _S.SHIFTING, _S.DRAINING})
SHARES_TRAFFIC = frozenset({_S.SHIFTING, _S.DRAINING})


def transition(current: MigrationState, new: MigrationState) -> MigrationState:
    """`new` if the table allows moving there from `current`; IllegalTransition otherwise."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"a migration cannot go from {current} to {new}")
    return new


@dataclass(frozen=True)
class MigrationTiming:
    shift_step_s: float = 3.0  # time at each traffic weight before the next
    drain_s: float = 2.0  # time the source keeps running with no new traffic
    step_timeout_s: float = 120.0  # a step taking longer aborts the migration

    def __post_init__(self) -> None:
        if self.shift_step_s < 0 or self.drain_s < 0 or self.step_timeout_s <= 0:
            raise InvalidInput("migration timing: durations must be >= 0 (timeout > 0)")


@dataclass(frozen=True)
class MigrationLimits:
    max_active: int = 2  # migrations past `pending` at once, fleet-wide
    max_active_per_zone: int = 1  # ... touching one zone (as source or target)

    def __post_init__(self) -> None:
        if self.max_active < 1 or self.max_active_per_zone < 1:
            raise InvalidInput("migration limits must be at least 1")


@dataclass(frozen=True)
class MigrationStep:
    """One reported step: the state entered, the target's traffic share then, and why."""

    state: MigrationState
    weight_pct: int
    at: datetime
    detail: str


@dataclass(frozen=True)
class Migration:
    id: str
    workload: str
    replica: int
    source: str
    target: str
    trigger: MigrationTrigger
    reason: str
    stateful: bool
    created_by: str
    created_at: datetime
    source_generation: int
    state: MigrationState = MigrationState.PENDING
    state_since: datetime | None = None  # None: since created_at
    generation: int = 0  # placement generation of the target's copy, reserved when admitted
    weight_pct: int = 0  # the target's share of the replica's traffic
    checkpoint_sha256: str | None = None
    checkpoint_size_bytes: int | None = None
    steps: tuple[MigrationStep, ...] = field(default=())
    version: int = 1

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL

    @property
    def entered_at(self) -> datetime:
        return self.state_since or self.created_at

    @property
    def source_weight_pct(self) -> int:
        return 100 - self.weight_pct if self.state in SHARES_TRAFFIC else 100

    @property
    def target_weight_pct(self) -> int:
        return self.weight_pct if self.state in SHARES_TRAFFIC else 0


def move_to(
    m: Migration, state: MigrationState, now: datetime, detail: str, **changes: object
) -> Migration:
    """`m` in `state` (checked against the table), with the step recorded."""
    transition(m.state, state)
    moved = replace(m, state=state, state_since=now, **changes)  # type: ignore[arg-type]
    step = MigrationStep(state, moved.target_weight_pct, now, detail)
    return replace(moved, steps=(*m.steps, step))


def abort_migration(m: Migration, now: datetime, reason: str) -> Migration:
    """Abort: the target's copy goes, all traffic returns to the source."""
    if not m.active:
        raise IllegalTransition(f"migration {m.id} is already {m.state}")
    return move_to(m, MigrationState.ABORTED, now, f"{reason}; traffic back on {m.source}",
                   weight_pct=0)  # fmt: skip


class CopyState(StrEnum):
    """What a node reports about its copy of a replica (the agent's replica states)."""

    FETCHING = "fetching"
    STAGED = "staged"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class CopyStatus:
    generation: int
    state: CopyState
    healthy: bool
    detail: str = ""
    restored_sha256: str | None = None


@dataclass(frozen=True)
class CheckpointStatus:
    sha256: str | None
    size_bytes: int | None
    error: str = ""


@dataclass(frozen=True)
class MigrationObservation:
    """What the control plane knows about the two nodes when it advances a migration."""

    source_liveness: Liveness
    target_liveness: Liveness
    target_copy: CopyStatus | None  # the target's report of its copy, if any
    checkpoint: CheckpointStatus | None  # the source's report for this migration
    checkpoint_stored: bool  # the archive the source reported is in the blob store
    still_on_source: bool = True  # the placement still has the replica on the source


def advance_migration(
    m: Migration, obs: MigrationObservation, now: datetime, timing: MigrationTiming
) -> Migration:
    """The migration after one look at the nodes: at most one step forward, or aborted.
    Returns `m` itself when nothing changes. `pending` is left by `admit_migrations`."""
    if not m.active or m.state is MigrationState.PENDING:
        return m
    failure = _failure(m, obs, now, timing)
    if failure is not None:
        return abort_migration(m, now, failure)
    copy = obs.target_copy if obs.target_copy and obs.target_copy.generation == m.generation \
        else None  # fmt: skip
    elapsed_s = (now - m.entered_at).total_seconds()
    s = MigrationState
    if m.state is s.PRESTAGING:
        if copy is not None and copy.state is not CopyState.FETCHING:
            if m.stateful:
                return move_to(
                    m,
                    s.CHECKPOINTING,
                    now,
                    f"artifacts staged on {m.target}; checkpointing {m.source}",
                )
            return move_to(m, s.STARTING, now,
                           f"artifacts staged on {m.target} (stateless: no state to move); "
                           "starting")  # fmt: skip
    elif m.state is s.CHECKPOINTING:
        cp = obs.checkpoint
        if cp is not None and cp.sha256 and obs.checkpoint_stored:
            return move_to(
                m, s.TRANSFERRING, now,
                f"state of {m.source} checkpointed ({cp.size_bytes or 0} bytes, sha256 "
                f"{cp.sha256[:12]}); {m.target} downloads it",
                checkpoint_sha256=cp.sha256, checkpoint_size_bytes=cp.size_bytes,
            )  # fmt: skip
    elif m.state is s.TRANSFERRING:
        if copy is not None and copy.restored_sha256 == m.checkpoint_sha256:
            return move_to(
                m, s.STARTING, now, f"state restored on {m.target} (sha256 verified); starting"
            )
    elif m.state is s.STARTING:
        if copy is not None and copy.state is CopyState.RUNNING and copy.healthy:
            first = WEIGHT_SCHEDULE_PCT[0]
            return move_to(m, s.SHIFTING, now,
                           f"{m.target} passed its health check; {first}% of traffic to it",
                           weight_pct=first)  # fmt: skip
    elif m.state is s.SHIFTING:
        if elapsed_s >= timing.shift_step_s:
            later = [w for w in WEIGHT_SCHEDULE_PCT if w > m.weight_pct]
            if later and later[0] < 100:
                return move_to(m, s.SHIFTING, now, f"{later[0]}% of traffic to {m.target}",
                               weight_pct=later[0])  # fmt: skip
            return move_to(
                m, s.DRAINING, now,
                f"100% of traffic to {m.target}; {m.source} drains for {timing.drain_s:g}s",
                weight_pct=100,
            )  # fmt: skip
    elif m.state is s.DRAINING and elapsed_s >= timing.drain_s:
        return move_to(
            m, s.COMPLETED, now, f"replica moved to {m.target}; {m.source} stops its copy"
        )
    return m


def _failure(
    m: Migration, obs: MigrationObservation, now: datetime, timing: MigrationTiming
) -> str | None:
    """Why the migration must be aborted now, if it must."""
    if not obs.still_on_source:
        return f"the placement no longer has the replica on {m.source}"
    if obs.source_liveness is Liveness.DEAD:
        return f"source {m.source} is dead (failover takes over)"
    if obs.target_liveness is Liveness.DEAD:
        return f"target {m.target} is dead"
    copy = obs.target_copy
    if copy is not None and copy.generation == m.generation:
        if copy.state is CopyState.FAILED:
            return f"the copy on {m.target} failed: {copy.detail}"
        if m.state in SHARES_TRAFFIC and not copy.healthy:
            return f"the copy on {m.target} became unhealthy: {copy.detail or copy.state}"
    cp = obs.checkpoint
    if m.state is MigrationState.CHECKPOINTING and cp is not None and cp.error:
        return f"checkpoint on {m.source} failed: {cp.error}"
    limit = timing.step_timeout_s
    if m.state not in SHARES_TRAFFIC and (now - m.entered_at).total_seconds() > limit:
        detail = f" ({copy.state}: {copy.detail})" if copy is not None and copy.detail else ""
        return f"step {m.state} did not finish within {limit:g}s{detail}"
    return None


@dataclass(frozen=True)
class Admission:
    admitted: tuple[str, ...]  # migration ids, in order
    deferred: Mapping[str, str]  # migration id -> why it waits


def admit_migrations(
    pending: Sequence[Migration],
    active: Sequence[Migration],
    zone_of: Mapping[str, str],
    limits: MigrationLimits,
) -> Admission:
    """Which pending migrations may start now under the fleet-wide and per-zone limits
    (oldest first). A migration counts against the zones of its source and its target.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> m = Migration("m1", "w", 0, "a", "b", MigrationTrigger.OPERATOR, "", False, "op", t, 1)
    >>> admit_migrations([m], [], {"a": "z1", "b": "z2"}, MigrationLimits()).admitted
    ('m1',)
    """
    running = [m for m in active if m.active and m.state is not MigrationState.PENDING]
    per_zone: dict[str, int] = {}
    for m in running:
        for zone in _zones(m, zone_of):
            per_zone[zone] = per_zone.get(zone, 0) + 1
    count = len(running)
    busy = {(m.workload, m.replica) for m in running}
    admitted: list[str] = []
    deferred: dict[str, str] = {}
    for m in sorted(pending, key=lambda m: (m.created_at, m.id)):
        zones = _zones(m, zone_of)
        full = [z for z in zones if per_zone.get(z, 0) >= limits.max_active_per_zone]
        if (m.workload, m.replica) in busy:
            deferred[m.id] = f"another migration of {m.workload}[{m.replica}] is in progress"
        elif count >= limits.max_active:
            deferred[m.id] = f"fleet-wide limit of {limits.max_active} active migrations"
        elif full:
            deferred[m.id] = (
                f"limit of {limits.max_active_per_zone} active migrations in zone {full[0]}"
            )
        else:
            admitted.append(m.id)
            count += 1
            busy.add((m.workload, m.replica))
            for zone in zones:
                per_zone[zone] = per_zone.get(zone, 0) + 1
    return Admission(tuple(admitted), deferred)


def _zones(m: Migration, zone_of: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(sorted({zone_of.get(m.source, "?"), zone_of.get(m.target, "?")}))
