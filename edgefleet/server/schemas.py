"""Wire schemas of the HTTP API (pydantic): requests are strict, unknown fields refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.core.device import ConnectionStatus, Device
from edgefleet.core.enrollment import EnrollmentState, EnrollmentToken
from edgefleet.core.group import Group
from edgefleet.security.audit import AuditRecord
from edgefleet.security.rbac import Role
from edgefleet.security.tokens import ApiToken


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Device-reported inventory.


class Hardware(Strict):
    arch: str = Field(max_length=32, description="Machine architecture, e.g. x86_64, aarch64.")
    cpu_count: int = Field(ge=1, le=4096)
    memory_mb: int = Field(ge=0)
    disk_mb: int = Field(ge=0, description="Free space in the agent's data dir.")
    accelerators: list[str] = Field(default_factory=list, max_length=16)


class Software(Strict):
    os: str = Field(max_length=64)
    os_version: str = Field("", max_length=128)
    python: str = Field(max_length=32)
    agent_version: str = Field(max_length=32)
    onnxruntime: str | None = Field(None, max_length=32)


class Location(Strict):
    region: str | None = Field(None, max_length=64)
    zone: str | None = Field(None, max_length=64)
    timezone: str | None = Field(None, max_length=64, description="IANA name, e.g. Europe/Berlin")
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)


class Inventory(Strict):
    hardware: Hardware
    software: Software
    location: Location = Field(default_factory=lambda: Location())


# Device API.


class EnrollRequest(Strict):
    enrollment_token: str = Field(min_length=1, max_length=256)
    public_key: str = Field(min_length=1, max_length=64, description="Base64 raw Ed25519 key.")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    labels: dict[str, str] = Field(default_factory=dict)
    inventory: Inventory
    heartbeat_interval_s: float | None = Field(
        None, ge=1, le=3600, description="Requested interval; the server default if absent."
    )


class EnrollResponse(BaseModel):
    device_id: str
    enrollment: EnrollmentState
    heartbeat_interval_s: float


class ReportRequest(Strict):
    applied_generation: int = Field(ge=0)
    inventory: Inventory


class ReportResponse(BaseModel):
    desired_generation: int
    heartbeat_interval_s: float


# Operator API.


class DeviceOut(BaseModel):
    id: str
    name: str
    enrollment: EnrollmentState
    status: ConnectionStatus
    labels: dict[str, str]
    last_seen: datetime | None
    created_at: datetime
    heartbeat_interval_s: float
    desired_generation: int
    applied_generation: int
    in_sync: bool
    inventory: dict[str, Any]
    desired: dict[str, Any]

    @classmethod
    def of(cls, device: Device, now: datetime) -> DeviceOut:
        return cls(
            id=device.id,
            name=device.name,
            enrollment=device.enrollment,
            status=device.connection(now),
            labels=dict(device.labels),
            last_seen=device.last_seen,
            created_at=device.created_at,
            heartbeat_interval_s=device.heartbeat_interval_s,
            desired_generation=device.desired_generation,
            applied_generation=device.applied_generation,
            in_sync=device.applied_generation == device.desired_generation,
            inventory=dict(device.inventory),
            desired={"generation": device.desired_generation, **device.desired},
        )


class LabelRequest(Strict):
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list, max_length=64)


class ConfigureRequest(Strict):
    heartbeat_interval_s: float = Field(ge=1, le=3600)


class CreateApiTokenRequest(Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@-]+$")
    role: Role
    expires_in_s: float | None = Field(None, gt=0)


class ApiTokenOut(BaseModel):
    id: str
    name: str
    role: Role
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None
    token: str | None = Field(None, description="The secret; shown once, at creation.")

    @classmethod
    def of(cls, token: ApiToken, secret: str | None = None) -> ApiTokenOut:
        return cls(
            id=token.id,
            name=token.name,
            role=token.role,
            created_by=token.created_by,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked=token.revoked,
            last_used_at=token.last_used_at,
            token=secret,
        )


class WhoAmI(BaseModel):
    token_id: str
    name: str
    role: Role


class CreateEnrollmentTokenRequest(Strict):
    description: str = Field("", max_length=256)
    auto_approve: bool = False
    expires_in_s: float | None = Field(None, gt=0)
    max_uses: int | None = Field(None, ge=1)


class EnrollmentTokenOut(BaseModel):
    id: str
    description: str
    auto_approve: bool
    expires_at: datetime | None
    max_uses: int | None
    uses: int
    revoked: bool
    created_by: str
    created_at: datetime
    token: str | None = Field(None, description="The secret; shown once, at creation.")

    @classmethod
    def of(cls, token: EnrollmentToken, secret: str | None = None) -> EnrollmentTokenOut:
        return cls(
            id=token.id,
            description=token.description,
            auto_approve=token.auto_approve,
            expires_at=token.expires_at,
            max_uses=token.max_uses,
            uses=token.uses,
            revoked=token.revoked,
            created_by=token.created_by,
            created_at=token.created_at,
            token=secret,
        )


class CreateGroupRequest(Strict):
    name: str = Field(min_length=1, max_length=64)
    selector: str = Field(max_length=4096)
    description: str = Field("", max_length=256)


class GroupOut(BaseModel):
    name: str
    selector: str
    description: str
    created_by: str
    created_at: datetime
    devices: list[str] | None = None

    @classmethod
    def of(cls, group: Group, device_ids: list[str] | None = None) -> GroupOut:
        return cls(
            name=group.name,
            selector=group.selector,
            description=group.description,
            created_by=group.created_by,
            created_at=group.created_at,
            devices=device_ids,
        )


class AuditRecordOut(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    target: str
    request_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, record: AuditRecord) -> AuditRecordOut:
        return cls(
            seq=record.seq,
            at=record.at,
            actor=record.actor,
            action=record.action,
            target=record.target,
            request_id=record.request_id,
            details=dict(record.details),
            prev_hash=record.prev_hash,
            hash=record.hash,
        )


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
