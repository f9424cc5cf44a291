"""HTTP wire schemas: the operator side of the DDI (hawkBit) API: targets and gateway tokens."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from edgefleet.server.schemas.base import Strict
from edgefleet.server.schemas.devices import DeviceOut
from edgefleet.store.repositories.ddi import GatewayToken


class CreateTargetRequest(Strict):
    controller_id: str = Field(min_length=1, max_length=64)
    labels: dict[str, str] = Field(default_factory=dict)


class TargetOut(DeviceOut):
    controller_id: str
    tenant: str
    token: str = Field(description="The TargetToken, shown once")
    poll_path: str = Field(description="The base poll's path")


class CreateGatewayTokenRequest(Strict):
    description: str = Field("", max_length=256)
    auto_approve: bool = False


class GatewayTokenOut(BaseModel):
    id: str
    tenant: str
    description: str
    auto_approve: bool
    revoked: bool
    created_by: str
    created_at: datetime
    token: str | None = Field(None, description="The GatewayToken, shown once at creation")

    @classmethod
    def of(cls, token: GatewayToken, secret: str | None = None) -> GatewayTokenOut:
        return cls(id=token.id, tenant=token.tenant, description=token.description,
                   auto_approve=token.auto_approve, revoked=token.revoked,
                   created_by=token.created_by, created_at=token.created_at,
                   token=secret)  # fmt: skip


# The device side: the hawkBit DDI API's JSON (its field names, camelCase and `_links`).


class DdiLinkOut(BaseModel):
    href: str


class DdiPollingOut(BaseModel):
    sleep: str = Field(description="The polling interval, HH:MM:SS")


class DdiConfigOut(BaseModel):
    polling: DdiPollingOut


class DdiBasePollOut(BaseModel):
    """The base poll: the polling interval and a link to each thing the target should do."""

    config: DdiConfigOut
    links: dict[str, DdiLinkOut] = Field(
        serialization_alias="_links",
        description="deploymentBase, cancelAction, installedBase and/or configData",
    )


class DdiHashesOut(BaseModel):
    sha1: str
    md5: str
    sha256: str


class DdiArtifactOut(BaseModel):
    filename: str
    hashes: DdiHashesOut
    size: int
    links: dict[str, DdiLinkOut] = Field(
        serialization_alias="_links", description="download(-http), md5sum(-http)"
    )


class DdiChunkOut(BaseModel):
    part: str
    name: str
    version: str
    artifacts: list[DdiArtifactOut]


class DdiDeploymentOut(BaseModel):
    download: str = Field(description="skip, attempt or forced")
    update: str = Field(description="skip, attempt or forced")
    maintenance_window: str | None = Field(
        None,
        serialization_alias="maintenanceWindow",
        exclude_if=lambda window: window is None,
        description="available or unavailable; absent without a maintenance window",
    )
    chunks: list[DdiChunkOut]


class DdiActionOut(BaseModel):
    """`deploymentBase` and `installedBase`: the action's release as chunks."""

    id: str
    deployment: DdiDeploymentOut

    @classmethod
    def of(cls, action: Mapping[str, Any]) -> DdiActionOut:
        """From the service's rendering (`core/updates/ddi.py`, `render_chunks`)."""
        deployment = action["deployment"]
        return cls(
            id=action["id"],
            deployment=DdiDeploymentOut(
                download=deployment["download"],
                update=deployment["update"],
                maintenance_window=deployment.get("maintenanceWindow"),
                chunks=[
                    DdiChunkOut(
                        part=c["part"],
                        name=c["name"],
                        version=c["version"],
                        artifacts=[
                            DdiArtifactOut(
                                filename=a["filename"],
                                hashes=DdiHashesOut(**a["hashes"]),
                                size=a["size"],
                                links={k: DdiLinkOut(**v) for k, v in a["_links"].items()},
                            )
                            for a in c["artifacts"]
                        ],
                    )
                    for c in deployment["chunks"]
                ],
            ),
        )


class DdiStopOut(BaseModel):
    stop_id: str = Field(serialization_alias="stopId")


class DdiCancelOut(BaseModel):
    id: str
    cancel_action: DdiStopOut = Field(serialization_alias="cancelAction")


class DdiAckOut(BaseModel):
    """Feedback and configData answer an empty object."""
