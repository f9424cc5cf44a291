"""HTTP wire schemas: policies and roles."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgefleet.server.schemas.base import Strict


class ManifestRequest(Strict):
    manifest: dict[str, Any] = Field(
        description="A manifest (kind: Policy or Role, or for policy test kind: Rollout or "
        "Workload), "
        "as its YAML parses to JSON."
    )
