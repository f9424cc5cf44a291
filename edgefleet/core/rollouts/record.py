"""Stored rollouts: the rollout with what the control plane keeps around it (its manifest,
who created it, when it is next due, its row version), each device's record, and the
timeline of what happened.

These are what the store reads and writes; the engine itself sees only `Rollout` and
`RolloutDevice`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgefleet.core.rollouts.observation import CurrentAssignment
from edgefleet.core.rollouts.rollout import FINAL_STATES, Rollout, RolloutDevice, RolloutState


@dataclass(frozen=True)
class RolloutRecord:
    rollout: Rollout
    name: str
    manifest: Mapping[str, Any]  # as the operator wrote it; the spec is parsed from it
    created_by: str
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None  # when the controller should look at it next; None once final
    train: str | None = None  # the release train that started it, if any
    version: int = 1  # optimistic concurrency

    @property
    def id(self) -> str:
        return self.rollout.id

    @property
    def state(self) -> RolloutState:
        return self.rollout.state

    @property
    def release(self) -> str:
        return str(self.rollout.spec.release)

    @property
    def active(self) -> bool:
        return self.rollout.state not in FINAL_STATES


@dataclass(frozen=True)
class DeviceRecord:
    """A device's record in one rollout: the engine's fields plus the controller's own."""

    device: RolloutDevice  # stored fields; observed ones are refreshed before deciding
    wave: int | None = None  # its wave in the plan (None: not planned, e.g. skipped)
    assignment: CurrentAssignment | None = None  # what the last assign/revert published
    first_assigned_at: datetime | None = None  # the KPI baseline ends here
    installed_at: datetime | None = None  # first seen installed: "after" telemetry starts here

    @property
    def device_id(self) -> str:
        return self.device.device_id


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened to a rollout: an engine action or an operator command."""

    at: datetime
    kind: str  # an action kind (assign-release, record-gates, ...) or a command
    reason: str
    actor: str = "controller"
    device_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0  # given by the store, 1-based per rollout
