"""Rollouts: the life of one rollout as a table of legal moves, and the records the engine
reads and writes (the rollout, and one record per device it targets).

    awaiting-approval ─approve─▶ pending      (four-eyes: a second operator approved)
    pending ─start─▶ progressing ─soak─▶ soaking ─promote─▶ progressing (next wave)
                      │     ▲               │ └─complete─▶ succeeded
                      │     └─resume─ paused ◀─pause─┘   (a failed gate with on_failure:
                      │                 │                 pause, or an operator)
                      └──── rollback ───┴──▶ rolling-back ─rollback-done─▶ rolled-back
                                                 └─fail─▶ failed (a device did not return)

    progressing, soaking, paused ─fail─▶ failed (deadline with action fail)
    awaiting-approval, pending, progressing, soaking, paused ─abort─▶ aborted (devices keep
                                                                   what they have)
    succeeded, failed, aborted ─rollback─▶ rolling-back (an operator changes their mind)

The engine (`rollout_decision.decide`) moves a rollout through `start`, `soak`, `promote`,
`complete`, `pause`, `rollback`, `rollback-done` and `fail`; operators move it with
`apply_command` (pause, resume, abort, rollback). Both go through `transition()`.

A device's own progress within the rollout::

    waiting ◀──▶ outside-window              (due, but its maintenance window is closed)
       │
       ▼
    updating ──▶ installed
       │ ▲           │ (the agent undid it)
       ▼ │           ▼
    retry-wait ◀─────┘ ──(attempts used up)──▶ failed
    skipped-incompatible                      (reported, never failed)
    got the release ──rollback──▶ rolling-back ──▶ rolled-back | rollback-failed
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from edgefleet.core.rollouts.gates import GateResult, GateVerdict
from edgefleet.core.rollouts.spec import DeadlineAction, RolloutSpec
from edgefleet.core.rollouts.waves import WavePlan
from edgefleet.core.telemetry.quiet_hours import QuietHours
from edgefleet.core.updates.compat import CompatVerdict
from edgefleet.errors import IllegalTransition, InvalidInput


class RolloutState(StrEnum):
    AWAITING_APPROVAL = "awaiting-approval"  # a policy wants a second operator's approval
    PENDING = "pending"
    PROGRESSING = "progressing"  # assigning the release to the devices of the current wave
    SOAKING = "soaking"  # the current wave is settled; waiting, then evaluating the gates
    PAUSED = "paused"
    ROLLING_BACK = "rolling-back"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled-back"


FINAL_STATES = frozenset(
    {
        RolloutState.SUCCEEDED,
        RolloutState.FAILED,
        RolloutState.ABORTED,
        RolloutState.ROLLED_BACK,
    }
)


class RolloutEvent(StrEnum):
    START = "start"
    SOAK = "soak"
    PROMOTE = "promote"
    COMPLETE = "complete"
    PAUSE = "pause"
    RESUME = "resume"
    ROLLBACK = "rollback"
    ROLLBACK_DONE = "rollback-done"
    FAIL = "fail"
    ABORT = "abort"
    APPROVE = "approve"


# The states a rollout is created in.
INITIAL_STATES = frozenset({RolloutState.PENDING, RolloutState.AWAITING_APPROVAL})

_S, _E = RolloutState, RolloutEvent
TRANSITIONS: dict[tuple[RolloutState, RolloutEvent], RolloutState] = {
    (_S.AWAITING_APPROVAL, _E.APPROVE): _S.PENDING,
    (_S.AWAITING_APPROVAL, _E.ABORT): _S.ABORTED,
    (_S.PENDING, _E.START): _S.PROGRESSING,
    (_S.PENDING, _E.ABORT): _S.ABORTED,
    (_S.PROGRESSING, _E.SOAK): _S.SOAKING,
    (_S.SOAKING, _E.PROMOTE): _S.PROGRESSING,
    (_S.SOAKING, _E.COMPLETE): _S.SUCCEEDED,
    (_S.PROGRESSING, _E.PAUSE): _S.PAUSED,
    (_S.SOAKING, _E.PAUSE): _S.PAUSED,
    (_S.PAUSED, _E.RESUME): _S.PROGRESSING,
    (_S.ROLLING_BACK, _E.ROLLBACK_DONE): _S.ROLLED_BACK,
    (_S.ROLLING_BACK, _E.FAIL): _S.FAILED,
    **{(s, _E.ROLLBACK): _S.ROLLING_BACK for s in (_S.PROGRESSING, _S.SOAKING, _S.PAUSED)},
    **{(s, _E.ROLLBACK): _S.ROLLING_BACK for s in (_S.SUCCEEDED, _S.FAILED, _S.ABORTED)},
    **{(s, _E.FAIL): _S.FAILED for s in (_S.PROGRESSING, _S.SOAKING, _S.PAUSED)},
    **{(s, _E.ABORT): _S.ABORTED for s in (_S.PROGRESSING, _S.SOAKING, _S.PAUSED)},
}


def transition(state: RolloutState, event: RolloutEvent) -> RolloutState:
    """The state after `event`, or IllegalTransition naming both."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"cannot {event} a rollout that is {state}") from None


class OperatorCommand(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"


class DeviceState(StrEnum):
    WAITING = "waiting"  # planned, not (or no longer) assigned; waits for its turn or a slot
    OUTSIDE_WINDOW = "outside-window"  # due, but its maintenance window is closed
    UPDATING = "updating"  # the release is assigned; no conclusive report yet
    INSTALLED = "installed"
    RETRY_WAIT = "retry-wait"  # an attempt failed; the next one waits for `retry_at`
    FAILED = "failed"  # every attempt failed
    SKIPPED_INCOMPATIBLE = "skipped-incompatible"
    ROLLING_BACK = "rolling-back"  # the previous release is assigned again
    ROLLED_BACK = "rolled-back"
    ROLLBACK_FAILED = "rollback-failed"
    REMOVED = "removed"  # the device was deleted from the fleet; the rollout leaves it be


# A wave is settled when each of its devices is in one of these.
SETTLED_DEVICE_STATES = frozenset(
    {
        DeviceState.INSTALLED,
        DeviceState.FAILED,
        DeviceState.SKIPPED_INCOMPATIBLE,
        DeviceState.REMOVED,
    }
)


class InstallReport(StrEnum):
    """What the device reported about its *current* assignment (the last AssignRelease or
    RevertRelease): a report about an earlier attempt is PENDING."""

    PENDING = "pending"
    INSTALLED = "installed"  # running the assigned release and healthy through the agent's
    # health window
    FAILED = "failed"  # the install failed, or the agent rolled it back locally


@dataclass(frozen=True)
class RolloutDevice:
    """One device's place in one rollout.

    The stored fields are written only through `apply_decision`; the observed ones are
    refreshed by the controller from the device's latest report before every `decide`.
    """

    device_id: str
    # Stored.
    state: DeviceState = DeviceState.WAITING
    attempts: int = 0  # assignments of the release so far
    assigned_at: datetime | None = None  # the last AssignRelease or RevertRelease
    retry_at: datetime | None = None
    previous_release: str | None = None  # what it last ran successfully before the first
    # attempt: where a rollback returns it (None: no release)
    reason: str = ""
    # Observed.
    report: InstallReport = InstallReport.PENDING
    healthy: bool = True  # online and its workloads healthy
    time_zone: str | None = None  # IANA name, for maintenance windows in "device" time
    quiet_hours: QuietHours | None = None  # its learned profile, for `window: predicted`
    compatibility: CompatVerdict = field(default_factory=CompatVerdict)
    current_release: str | None = None  # the release it last ran successfully (its reports)
    desired_release: str | None = None  # the release its desired state names

    @property
    def touched(self) -> bool:
        """The release has been assigned to it at least once (rollback must reach it), and
        it is still in the fleet."""
        return self.attempts > 0 and self.state is not DeviceState.REMOVED

    @property
    def unavailable(self) -> bool:
        """Counts against max_unavailable: updating, or touched by the rollout and unhealthy.

        Devices the rollout has not touched never count, so a fleet's usual offline devices
        do not stall it.
        """
        if self.state in (DeviceState.UPDATING, DeviceState.ROLLING_BACK):
            return True
        return self.touched and not self.healthy


@dataclass(frozen=True)
class GateEvaluation:
    """The gates of one wave, evaluated once at the end of its soak."""

    wave: int
    at: datetime
    verdict: GateVerdict
    results: tuple[GateResult, ...]
    reason: str


@dataclass(frozen=True)
class Rollout:
    """One rollout: its spec and the engine's stored progress."""

    id: str
    spec: RolloutSpec
    state: RolloutState = RolloutState.PENDING
    reason: str = "created; waiting to start"
    plan: WavePlan | None = None  # frozen when the rollout starts
    wave: int = 0  # index of the current wave in plan.waves
    started_at: datetime | None = None
    soak_until: datetime | None = None
    gate_wait_until: datetime | None = None  # end of the wait for enough gate data
    rollback_started_at: datetime | None = None
    recent_assignments: tuple[datetime, ...] = ()  # the rate limit's history (last minute)
    gate_evaluations: tuple[GateEvaluation, ...] = ()

    def deadline_at(self) -> datetime | None:
        """The absolute deadline, once the rollout has started."""
        if self.spec.deadline is None or self.started_at is None:
            return None
        return self.spec.deadline.resolve(self.started_at)

    def past_deadline(self, now: datetime, action: DeadlineAction) -> bool:
        """True when the deadline, with this action, has passed."""
        deadline = self.deadline_at()
        spec = self.spec.deadline
        return (
            deadline is not None and spec is not None and spec.action is action and now >= deadline
        )

    def require_plan(self) -> WavePlan:
        """The wave plan of a started rollout."""
        if self.plan is None:
            raise InvalidInput(f"rollout {self.id} is {self.state} but has no wave plan")
        return self.plan

    def wave_name(self, index: int | None = None) -> str:
        """`wave 2/4 (5%)` for the current wave, or wave `index`."""
        plan = self.require_plan()
        i = self.wave if index is None else index
        return f"wave {i + 1}/{len(plan.waves)} ({plan.waves[i].label})"


def format_time(t: datetime) -> str:
    """How reasons show a time: `2026-03-29 01:30:00Z` (UTC)."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class DesiredRelease:
    """What a rollout wants a device's desired state to name, derived from its record."""

    release: str | None  # None: no release at all (a rollback to a device that had none)
    attempt: int  # put it in the document, so each new attempt is a new generation


def desired_release(rollout: Rollout, device: RolloutDevice) -> DesiredRelease | None:
    """The release this rollout wants on `device`, or None if it never assigned it one.

    A restarted controller can re-render every device's desired state from the stored
    records alone: the rollout's release from the first AssignRelease on, the previous
    release from the first RevertRelease on.
    """
    if not device.touched:
        return None
    if device.state in (
        DeviceState.ROLLING_BACK,
        DeviceState.ROLLED_BACK,
        DeviceState.ROLLBACK_FAILED,
    ):
        return DesiredRelease(device.previous_release, device.attempts)
    return DesiredRelease(str(rollout.spec.release), device.attempts)


def approve(rollout: Rollout, *, requested_by: str, actor: str) -> Rollout:
    """The rollout once a second operator approved it, or IllegalTransition. Who may approve
    is `core.approval.decide_approver`'s decision."""
    state = transition(rollout.state, RolloutEvent.APPROVE)
    return replace(rollout, state=state, reason=f"requested by {requested_by}, approved by "
                                                f"{actor}; waiting to start")  # fmt: skip


def apply_command(
    rollout: Rollout, command: OperatorCommand, now: datetime, *, actor: str, note: str = ""
) -> Rollout:
    """The rollout after an operator's command, or IllegalTransition.

    `resume` returns a paused rollout to progressing: once its current wave is settled it
    soaks again from the start and its gates are evaluated afresh (so resuming after a failed
    gate re-checks it instead of overriding it). `rollback` and `abort` take effect at the
    next `decide`; an aborted rollout leaves every device with what it has.
    """
    state = transition(rollout.state, RolloutEvent(command.value))
    reason = f"{command} by {actor}" + (f": {note}" if note else "")
    if command is OperatorCommand.ROLLBACK:
        return replace(rollout, state=state, reason=reason, rollback_started_at=now)
    if command is OperatorCommand.RESUME:
        return replace(rollout, state=state, reason=reason, soak_until=None, gate_wait_until=None)
    return replace(rollout, state=state, reason=reason)
