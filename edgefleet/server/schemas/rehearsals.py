"""HTTP wire schemas: saved lab rehearsals."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from edgefleet.core.rollouts.rehearsal_record import RehearsalRecord
from edgefleet.server.schemas.base import IsoDatetime, Strict


class SaveRehearsalRequest(Strict):
    rollout: str = Field(..., max_length=63, description="The rollout manifest's name")
    report: dict[str, Any] = Field(..., description="The lab report (lab rehearse -o x.json)")


class RehearsalOut(BaseModel):
    id: str
    rollout: str = Field(description="The rollout manifest's name")
    release: str
    outcome: str = Field(description="The predicted rollout state")
    size_bytes: int
    created_by: str
    created_at: IsoDatetime

    @classmethod
    def fields_of(cls, r: RehearsalRecord) -> dict[str, Any]:
        return {
            "id": r.id,
            "rollout": r.rollout,
            "release": r.release,
            "outcome": r.outcome,
            "size_bytes": r.size_bytes,
            "created_by": r.created_by,
            "created_at": r.created_at,
        }

    @classmethod
    def of(cls, r: RehearsalRecord) -> RehearsalOut:
        return cls(**cls.fields_of(r))


class RehearsalWithReportOut(RehearsalOut):
    report: dict[str, Any] = Field(description="The lab report")

    @classmethod
    def of(cls, r: RehearsalRecord) -> RehearsalWithReportOut:
        return cls(**cls.fields_of(r), report=dict(r.report))
