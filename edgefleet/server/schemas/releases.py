"""HTTP wire schemas: artifacts, releases and their assignment to devices."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.core.updates.release import Artifact, ArtifactKind, Release
from edgefleet.core.updates.service_manifest import MAX_MANIFEST_BYTES
from edgefleet.server.schemas.base import Strict


class CreateArtifactRequest(Strict):
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64, description="SemVer")
    kind: ArtifactKind = ArtifactKind.FILE
    sha256: str = Field(min_length=64, max_length=64, description="Of an uploaded blob")
    file_name: str = Field(min_length=1, max_length=128)
    requires: list[str] = Field(default_factory=list, max_length=64)


class ArtifactOut(BaseModel):
    name: str
    version: str
    kind: ArtifactKind
    sha256: str
    size_bytes: int
    file_name: str
    requires: list[str]
    facts: dict[str, Any]
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, a: Artifact) -> ArtifactOut:
        return cls(
            name=a.name,
            version=a.version,
            kind=a.kind,
            sha256=a.sha256,
            size_bytes=a.size_bytes,
            file_name=a.file_name,
            requires=list(a.requirements),
            facts=dict(a.facts),
            created_by=a.created_by,
            created_at=a.created_at,
        )


class ServiceFileIn(Strict):
    file_name: str = Field(min_length=1, max_length=128)
    content: str = Field(max_length=MAX_MANIFEST_BYTES, description="The manifest (YAML) text")


class CreateReleaseRequest(Strict):
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)
    artifacts: list[str] = Field(
        default_factory=list, max_length=64, description="NAME@VERSION each"
    )
    service: ServiceFileIn | None = Field(
        None,
        description="The release's service manifest, created with the release as the "
        "artifact NAME-service@VERSION (both or neither)",
    )


class ReleaseOut(BaseModel):
    name: str
    version: str
    artifacts: list[str]
    signed: bool
    targets_version: int | None
    created_by: str
    created_at: datetime
    files: list[ArtifactOut] | None = None

    @classmethod
    def of(cls, r: Release, files: list[Artifact] | None = None) -> ReleaseOut:
        return cls(
            name=r.name,
            version=r.version,
            artifacts=[str(a) for a in r.artifacts],
            signed=r.signed,
            targets_version=r.targets_version,
            created_by=r.created_by,
            created_at=r.created_at,
            files=[ArtifactOut.of(a) for a in files] if files is not None else None,
        )


class AssignRequest(Strict):
    device: str | None = Field(None, description="A device id or name")
    selector: str | None = Field(None, max_length=4096, description="Or: every matching device")
    stage_only: bool = Field(False, description="Deliver and verify now, install on activate")


class SkippedDevice(BaseModel):
    id: str
    name: str
    reason: str


class AssignResponse(BaseModel):
    assigned: list[str]
    skipped: list[SkippedDevice]


class DeltaOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_version: str
    to_version: str
    state: str
    delta_size: int | None
    target_size: int | None
    ratio: float | None = Field(description="Delta size over target size")
    reason: str
