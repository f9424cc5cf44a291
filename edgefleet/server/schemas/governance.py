"""HTTP wire schemas: policies and roles."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.server.schemas.base import IsoDatetime, Strict
from edgefleet.store.repositories.policies import PendingChange, StoredPolicy


class ManifestRequest(Strict):
    manifest: dict[str, Any] = Field(
        description="A manifest (kind: Policy or Role, or for policy test kind: Rollout or "
        "Workload), "
        "as its YAML parses to JSON."
    )


class PolicyOut(BaseModel):
    name: str
    manifest: dict[str, Any] = Field(description="The Policy manifest as applied")
    updated_by: str
    updated_at: IsoDatetime

    @classmethod
    def of(cls, policy: StoredPolicy) -> PolicyOut:
        return cls(
            name=policy.name,
            manifest=dict(policy.document),
            updated_by=policy.updated_by,
            updated_at=policy.updated_at,
        )


class AppliedPolicyOut(BaseModel):
    outcome: str = Field(description="created, updated or unchanged")
    dry_run: bool
    policy: PolicyOut


class ViolationOut(BaseModel):
    policy: str
    rule: str
    reason: str


class PolicyTestOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="Rollout or Workload")
    policies: int = Field(description="How many policies were checked")
    allowed: bool
    violations: list[ViolationOut]
    needs_approval: list[str] = Field(description="Why a second operator must approve")


class RoleOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    builtin: bool
    permissions: list[str]
    description: str
    updated_by: str | None = Field(description="None for a built-in role")
    updated_at: str | None = Field(description="ISO 8601; None for a built-in role")
    tokens: list[str] | None = Field(description="Ids of the tokens holding it, if looked up")


class AppliedRoleOut(BaseModel):
    outcome: str = Field(description="created, updated or unchanged")
    dry_run: bool
    role: RoleOut


class ChangeOut(BaseModel):
    id: str
    kind: str = Field(description="root-rotation")
    summary: str
    state: str = Field(description="pending or approved")
    requested_by: str
    requested_at: IsoDatetime
    decided_by: str | None
    decided_at: IsoDatetime | None

    @classmethod
    def fields_of(cls, change: PendingChange) -> dict[str, Any]:
        return {
            "id": change.id,
            "kind": change.kind,
            "summary": change.summary,
            "state": change.state,
            "requested_by": change.requested_by,
            "requested_at": change.requested_at,
            "decided_by": change.decided_by,
            "decided_at": change.decided_at,
        }

    @classmethod
    def of(cls, change: PendingChange) -> ChangeOut:
        return cls(**cls.fields_of(change))


class ApprovedChangeOut(ChangeOut):
    root_version: int = Field(description="The trusted root's version after the change")
