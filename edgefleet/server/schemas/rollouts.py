"""HTTP wire schemas: rollouts and release trains."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgefleet.server.schemas.base import Strict


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
