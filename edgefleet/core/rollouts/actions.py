"""Rollout actions: what a decision asks for, and `apply_decision`, the one way a decision
changes the stored rollout and device records.

Two actions reach outside the store and are the controller's job: `AssignRelease` (publish a
new desired-state generation naming the rollout's release, even when it already names it,
so the agent tries again) and `RevertRelease` (publish one naming the device's previous
release, or none). Every other action only changes records; all of them carry a reason for
the rollout's timeline and report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import ClassVar

from edgefleet.core.rollouts.rollout import (
    DeviceState,
    GateEvaluation,
    InstallReport,
    Rollout,
    RolloutDevice,
    RolloutEvent,
    RolloutState,
    transition,
)
from edgefleet.core.rollouts.waves import WavePlan
from edgefleet.errors import InvalidInput

RATE_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class StartRollout:
    plan: WavePlan
    reason: str
    kind: ClassVar[str] = "start-rollout"
    event: ClassVar[RolloutEvent | None] = RolloutEvent.START


@dataclass(frozen=True)
class StartSoak:
    wave: int
    until: datetime
    reason: str
    kind: ClassVar[str] = "start-soak"
    event: ClassVar[RolloutEvent | None] = RolloutEvent.SOAK


@dataclass(frozen=True)
class ExtendSoak:
    """Keep soaking because a gate lacks data (see GatesSpec.insufficient_data_*)."""

    wave: int
    until: datetime
    reason: str
    kind: ClassVar[str] = "extend-soak"
    event: ClassVar[RolloutEvent | None] = None


@dataclass(frozen=True)
class RecordGates:
    evaluation: GateEvaluation
    reason: str
    kind: ClassVar[str] = "record-gates"
    event: ClassVar[RolloutEvent | None] = None


@dataclass(frozen=True)
class PromoteWave:
    wave: int  # the wave that starts now
    reason: str
    kind: ClassVar[str] = "promote-wave"
    event: ClassVar[RolloutEvent | None] = RolloutEvent.PROMOTE


@dataclass(frozen=True)
class CompleteRollout:
    reason: str
    kind: ClassVar[str] = "complete-rollout"
    event: ClassVar[RolloutEvent | None] = RolloutEvent.COMPLETE


@dataclass(frozen=True)
class PauseRollout:
    reason: str
    kind: ClassVar[str] = "pause-rollout"
    event: ClassVar[RolloutEvent | None] = RolloutEvent.PAUSE


@dataclass(frozen=True)
class StartRollback:
    reason: str
    kind: ClassVar[str] = "start-rollback"
    event: ClassVar[RolloutEvent | None] = RolloutEvent.ROLLBACK


@dataclass(frozen=True)
class FinishRollback:
    reason: str
    kind: ClassVar[str] = "finish-rollback"
    event: ClassVar[RolloutEvent | None] = RolloutEvent.ROLLBACK_DONE


@dataclass(frozen=True)
class FailRollout:
    reason: str
    kind: ClassVar[str] = "fail-rollout"
    event: ClassVar[RolloutEvent | None] = RolloutEvent.FAIL


@dataclass(frozen=True)
class AssignRelease:
    """Publish the rollout's release to the device (a new generation every time)."""

    device_id: str
    release: str
    wave: int
    attempt: int  # 1 for the first install
    reason: str
    kind: ClassVar[str] = "assign-release"
    event: ClassVar[RolloutEvent | None] = None


@dataclass(frozen=True)
class RevertRelease:
    """Publish the device's previous release again (None: no release at all)."""

    device_id: str
    release: str | None
    reason: str
    kind: ClassVar[str] = "revert-release"
    event: ClassVar[RolloutEvent | None] = None


@dataclass(frozen=True)
class MarkDevice:
    device_id: str
    state: DeviceState
    reason: str
    retry_at: datetime | None = None
    kind: ClassVar[str] = "mark-device"
    event: ClassVar[RolloutEvent | None] = None


Action = (
    StartRollout
    | StartSoak
    | ExtendSoak
    | RecordGates
    | PromoteWave
    | CompleteRollout
    | PauseRollout
    | StartRollback
    | FinishRollback
    | FailRollout
    | AssignRelease
    | RevertRelease
    | MarkDevice
)


@dataclass(frozen=True)
class Decision:
    at: datetime
    actions: tuple[Action, ...]
    state: RolloutState  # the rollout's state once the actions are applied
    reason: str  # one line: what the rollout is doing or waiting for
    # The earliest time at which waiting alone changes the decision (soak end, retry due,
    # install timeout, window opening, rate-limit slot, deadline); None: only reports can.
    next_check_at: datetime | None = None

    @property
    def assignments(self) -> tuple[AssignRelease, ...]:
        return tuple(a for a in self.actions if isinstance(a, AssignRelease))

    @property
    def reverts(self) -> tuple[RevertRelease, ...]:
        return tuple(a for a in self.actions if isinstance(a, RevertRelease))

    @property
    def changed_device_ids(self) -> frozenset[str]:
        """The devices whose records this decision changes (the ones to persist)."""
        return frozenset(
            a.device_id
            for a in self.actions
            if isinstance(a, AssignRelease | RevertRelease | MarkDevice)
        )


def _device(devices: dict[str, RolloutDevice], device_id: str) -> RolloutDevice:
    try:
        return devices[device_id]
    except KeyError:
        raise InvalidInput(f"device {device_id!r} has no record in this rollout") from None


def _apply_to_device(
    devices: dict[str, RolloutDevice],
    action: AssignRelease | RevertRelease | MarkDevice,
    now: datetime,
) -> None:
    device = _device(devices, action.device_id)
    match action:
        case AssignRelease():
            devices[action.device_id] = replace(
                device,
                state=DeviceState.UPDATING,
                attempts=device.attempts + 1,
                assigned_at=now,
                retry_at=None,
                reason=action.reason,
                report=InstallReport.PENDING,
                previous_release=device.previous_release
                if device.touched
                else device.current_release,
            )
        case RevertRelease():
            devices[action.device_id] = replace(
                device,
                state=DeviceState.ROLLING_BACK,
                assigned_at=now,
                retry_at=None,
                reason=action.reason,
                report=InstallReport.PENDING,
            )
        case MarkDevice():
            devices[action.device_id] = replace(
                device, state=action.state, retry_at=action.retry_at, reason=action.reason
            )


def _apply_to_rollout(rollout: Rollout, action: Action, now: datetime) -> Rollout:
    if action.event is not None:
        rollout = replace(rollout, state=transition(rollout.state, action.event))
    match action:
        case StartRollout():
            return replace(rollout, plan=action.plan, wave=0, started_at=now, reason=action.reason)
        case StartSoak():
            return replace(
                rollout, soak_until=action.until, gate_wait_until=None, reason=action.reason
            )
        case ExtendSoak():
            return replace(rollout, gate_wait_until=action.until, reason=action.reason)
        case RecordGates():
            return replace(rollout, gate_evaluations=(*rollout.gate_evaluations, action.evaluation))
        case PromoteWave():
            return replace(
                rollout,
                wave=action.wave,
                soak_until=None,
                gate_wait_until=None,
                reason=action.reason,
            )
        case StartRollback():
            return replace(rollout, rollback_started_at=now, reason=action.reason)
        case CompleteRollout() | PauseRollout() | FinishRollback() | FailRollout():
            return replace(rollout, reason=action.reason)
        case AssignRelease():
            cutoff = now - RATE_WINDOW
            recent = tuple(t for t in rollout.recent_assignments if t > cutoff)
            return replace(rollout, recent_assignments=(*recent, now))
        case _:
            return rollout


def apply_actions(
    rollout: Rollout,
    devices: dict[str, RolloutDevice],
    actions: tuple[Action, ...] | list[Action],
    now: datetime,
) -> Rollout:
    """Apply `actions` in order: return the new rollout and update `devices` in place."""
    for action in actions:
        if isinstance(action, AssignRelease | RevertRelease | MarkDevice):
            _apply_to_device(devices, action, now)
        rollout = _apply_to_rollout(rollout, action, now)
    return rollout


def apply_decision(
    rollout: Rollout, devices: Mapping[str, RolloutDevice], decision: Decision
) -> tuple[Rollout, dict[str, RolloutDevice]]:
    """The rollout and device records after `decision` — what the controller stores.

    Only the records named by an action change; the controller persists those.
    """
    updated = dict(devices)
    return apply_actions(rollout, updated, decision.actions, decision.at), updated
