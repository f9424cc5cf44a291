"""HTTP wire schemas: saved lab rehearsals."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgefleet.server.schemas.base import Strict


class SaveRehearsalRequest(Strict):
    rollout: str = Field(..., max_length=63, description="The rollout manifest's name")
    report: dict[str, Any] = Field(..., description="The lab report (lab rehearse -o x.json)")
