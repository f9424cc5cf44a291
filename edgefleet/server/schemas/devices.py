"""HTTP wire schemas: devices as operators see and change them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from edgefleet.core.device import ConnectionStatus, Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.server.schemas.base import Strict


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
    release: dict[str, Any] | None = Field(None, description="Assigned release")
    release_status: dict[str, Any] = Field(default_factory=dict)

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
            release=device.release_assignment.to_dict() if device.release_assignment else None,
            release_status=dict(device.release_status),
        )


class LabelRequest(Strict):
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list, max_length=64)


class ConfigureRequest(Strict):
    heartbeat_interval_s: float = Field(ge=1, le=3600)
