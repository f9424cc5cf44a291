"""Operator API for stored rehearsals (`edgefleet lab rehearse --save`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from edgefleet.core.rollouts.rehearsal_record import REHEARSALS_KEPT
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.rehearsals import (
    RehearsalOut,
    RehearsalWithReportOut,
    SaveRehearsalRequest,
)
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1", tags=["rehearsals"])


@router.post("/rehearsals", status_code=201, summary="Store a rehearsal report")
def save_rehearsal(
    body: SaveRehearsalRequest,
    ctx: OperatorContext = Depends(requires(Permission.ROLLOUTS_WRITE)),
    svc: Services = Depends(services),
) -> RehearsalOut:
    return RehearsalOut.of(svc.rehearsals.save(ctx, body.rollout, body.report))


@router.get("/rehearsals", summary="Stored rehearsals, newest first (without their reports)")
def list_rehearsals(
    rollout: str | None = Query(None, description="Only those of this rollout name"),
    limit: int = Query(50, ge=1, le=REHEARSALS_KEPT),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[RehearsalOut]:
    return [RehearsalOut.of(r) for r in svc.rehearsals.newest(ctx, rollout, limit)]


@router.get("/rehearsals/{rehearsal_id}", summary="A stored rehearsal with its report")
def get_rehearsal(
    rehearsal_id: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> RehearsalWithReportOut:
    return RehearsalWithReportOut.of(svc.rehearsals.get(ctx, rehearsal_id))
