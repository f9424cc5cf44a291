"""HTTP wire schemas: the liveness and readiness probes."""

from __future__ import annotations

from pydantic import BaseModel, Field


class HealthOut(BaseModel):
    status: str = Field(description="ok")
    version: str


class ReadinessOut(BaseModel):
    status: str = Field(description="ready")
    replica: str
    roles: list[str]
    leading: list[str] = Field(description="The controller leases this replica acts under")
    fenced_writes_refused: int = Field(
        description="Writes of its controllers that found their lease taken over"
    )
