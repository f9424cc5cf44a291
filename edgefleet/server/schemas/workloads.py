"""HTTP wire schemas: workloads, placements, migrations and service endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgefleet.server.schemas.base import Strict


class ApplyWorkloadRequest(Strict):
    document: dict[str, Any] = Field(
        description="A Workload manifest (kind: Workload, in the Kubernetes shape or flat), "
        "as its YAML parses to JSON; see docs/workloads.md."
    )


class MigrateRequest(Strict):
    replica: int = Field(0, ge=0, le=1000)
    to: str | None = Field(None, max_length=128, description="Target device (id or name)")
    selector: str | None = Field(
        None, max_length=4096, description="Or: the best node matching this label selector"
    )
