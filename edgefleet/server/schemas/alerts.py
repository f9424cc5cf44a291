"""HTTP wire schemas: alerts."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class AlertOut(BaseModel):
    id: str
    device_id: str
    kind: str
    kpi: str
    metrics: list[str]
    status: str
    opened_at: datetime
    open_reason: str
    value: float | None
    score: float | None
    closed_at: datetime | None
    close_reason: str | None
