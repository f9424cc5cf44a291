"""HTTP wire schemas: rollouts and release trains.

The services render rollouts as the JSON the store also keeps (`core/rollouts/codec.py`:
times as ISO 8601 text, non-finite numbers as "nan"/"inf"); these models type that JSON,
and refuse a field they do not know, so a view and its schema cannot drift apart."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.core.rollouts.rollout import RolloutState
from edgefleet.server.schemas.base import Strict

Time = str  # ISO 8601 with microseconds, as core/rollouts/codec.py writes it


class CreateRolloutRequest(Strict):
    manifest: dict[str, Any] = Field(
        description="A Rollout manifest (kind: Rollout, in the Kubernetes shape or flat), "
        "as its YAML parses to JSON; see docs/rollouts.md."
    )
    supersede: bool = Field(
        False,
        description="Abort the active rollouts that hold any of the target devices and take "
        "the devices over, instead of refusing with 409 devices_in_rollout.",
    )


class RolloutCommandRequest(Strict):
    note: str = Field("", max_length=500, description="Why; kept in the timeline and audit.")


class ApplyReleaseTrainRequest(Strict):
    manifest: dict[str, Any] = Field(description="A ReleaseTrain manifest (kind: ReleaseTrain).")


class RolloutView(BaseModel):
    """A view the rollout services render as JSON: every field it sends is declared here."""

    model_config = ConfigDict(extra="forbid")


class RolloutSummaryOut(RolloutView):
    id: str
    name: str
    release: str = Field(description="NAME@VERSION")
    target: str = Field(description="The label selector (empty: every device)")
    state: RolloutState
    reason: str
    train: str | None = Field(description="The release train that started it")
    created_by: str
    created_at: Time | None
    updated_at: Time | None
    started_at: Time | None
    wave: int | None = Field(description="Index of the current wave")
    waves_total: int | None
    on_failure: str
    due_at: Time | None = Field(description="When the controller looks at it next")


class RolloutListItemOut(RolloutSummaryOut):
    counts: dict[str, int] = Field(description="Devices by state")


class PlannedDeviceOut(RolloutView):
    id: str
    name: str
    wave: int | None
    compatible: bool
    reason: str


class PlannedWaveOut(RolloutView):
    index: int
    label: str
    size: int
    soak_s: int | float
    devices: list[str] = Field(description="Device names")


class PlanPreviewOut(RolloutView):
    devices: list[PlannedDeviceOut]
    waves: list[PlannedWaveOut]


class CreatedRolloutOut(RolloutView):
    created: bool = Field(description="False: an identical rollout was already active")
    superseded: list[str] = Field(description="Ids of the rollouts aborted to take over")
    rollout: RolloutSummaryOut


class RolloutDryRunOut(RolloutView):
    dry_run: bool
    created: bool
    superseded: list[str]
    rollout: RolloutSummaryOut
    plan: PlanPreviewOut | None = Field(description="None: an identical rollout is active")


class GateResultOut(RolloutView):
    gate: str
    verdict: str
    measured: int | float | str | None = Field(description='A number, "nan", "inf" or "-inf"')
    threshold: int | float | str | None
    unit: str
    devices: int
    samples: int
    reason: str


class GateEvaluationOut(RolloutView):
    wave: int
    at: Time | None
    verdict: str
    results: list[GateResultOut]
    reason: str


class WaveStatusOut(RolloutView):
    index: int
    label: str
    size: int
    soak_s: int | float
    counts: dict[str, int] = Field(description="Devices by state")
    current: bool
    gate: GateEvaluationOut | None = Field(description="The wave's last gate evaluation")


class RolloutDeviceOut(RolloutView):
    device_id: str
    state: str
    attempts: int
    assigned_at: Time | None
    retry_at: Time | None
    previous_release: str | None
    reason: str
    name: str
    wave: int | None
    installed_at: Time | None


class RolloutStatusOut(RolloutSummaryOut):
    summary: str = Field(description="One line: what the rollout is doing or waiting for")
    waves: list[WaveStatusOut]
    skipped: int = Field(description="Devices skipped as incompatible")
    gates: list[GateEvaluationOut]
    devices: list[RolloutDeviceOut]
    manifest: dict[str, Any]


class RolloutReportSummaryOut(RolloutSummaryOut):
    summary: str
    skipped: int
    manifest: dict[str, Any]


class TimelineEventOut(RolloutView):
    seq: int
    at: Time | None
    kind: str
    actor: str
    device_id: str | None
    device: str | None = Field(description="The device's name")
    reason: str


class RollbackOut(RolloutView):
    started_at: Time | None
    devices: list[RolloutDeviceOut] = Field(description="Devices that received the release")
    actions: list[TimelineEventOut]


class RolloutReportOut(RolloutView):
    rollout: RolloutReportSummaryOut
    generated_at: Time | None
    totals: dict[str, int] = Field(description="Devices by state")
    touched: int = Field(description="Devices that received the release")
    waves: list[WaveStatusOut]
    gates: list[GateEvaluationOut]
    skipped: list[RolloutDeviceOut]
    failed: list[RolloutDeviceOut]
    rollback: RollbackOut
    timeline: list[TimelineEventOut]


class ReleaseTrainOut(RolloutView):
    name: str
    state: str
    reason: str
    releases: list[str] = Field(description="NAME@VERSION each, in order")
    position: int
    current_release: str | None
    rollout_id: str | None
    allow_insufficient_data: bool
    description: str
    created_by: str
    created_at: Time | None
    updated_at: Time | None
    manifest: dict[str, Any]


class AppliedReleaseTrainOut(RolloutView):
    action: str = Field(description="created, updated or unchanged")
    train: ReleaseTrainOut
    dry_run: bool
