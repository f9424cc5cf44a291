"""HTTP wire schemas: the TUF trust root."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.server.schemas.base import Strict
from edgefleet.server.schemas.governance import ChangeOut


class SetRootRequest(Strict):
    root: dict[str, Any] = Field(description="Signed root metadata (TUF JSON)")
    targets: dict[str, Any] | None = Field(
        None, description="Targets re-signed by new targets keys, when a rotation changes them"
    )


class TrustRoleOut(BaseModel):
    keyids: list[str]
    threshold: int


class TrustStatusOut(BaseModel):
    """Before trust is set up only `initialized` (false) is sent."""

    model_config = ConfigDict(extra="forbid")

    initialized: bool
    root_version: int | None = None
    root_expires: str | None = Field(None, description="ISO 8601")
    roles: dict[str, TrustRoleOut] | None = None
    targets_version: int | None = None
    targets_expires: str | None = Field(None, description="ISO 8601")
    targets: int | None = Field(None, description="How many targets are signed")


class OnlineKeysOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot: dict[str, Any] = Field(description="TUF public key")
    timestamp: dict[str, Any] = Field(description="TUF public key")


class RootVersionOut(BaseModel):
    root_version: int


class PendingRootChangeOut(BaseModel):
    pending_change: ChangeOut = Field(description="Waiting for a second admin's approval")
