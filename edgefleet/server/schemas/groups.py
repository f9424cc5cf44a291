"""HTTP wire schemas: device groups."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from edgefleet.core.group import Group
from edgefleet.server.schemas.base import Strict


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
