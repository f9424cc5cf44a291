"""Operator API behind the web dashboard: aggregates and pages that keep a view of a large
fleet cheap (`services/dashboard.py`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from edgefleet.core.device import ConnectionStatus
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.base import SQL_INTEGER_MAX
from edgefleet.server.schemas.dashboard import (
    AuditVerificationOut,
    DevicePageOut,
    DeviceStoryOut,
    OverviewOut,
)
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.dashboard import MAX_PAGE

router = APIRouter(prefix="/v1/dashboard", tags=["dashboard"])


@router.get("/overview", summary="Fleet counts by status, location and release; trouble spots")
def overview(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> OverviewOut:
    return OverviewOut.model_validate(svc.dashboard.overview(ctx))


@router.get("/devices", summary="One page of devices in name order, with the total matching")
def device_page(
    status: ConnectionStatus | None = None,
    enrollment: EnrollmentState | None = None,
    search: str | None = Query(None, max_length=128, description="Part of a name or id"),
    offset: int = Query(0, ge=0, le=SQL_INTEGER_MAX),
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> DevicePageOut:
    page = svc.dashboard.devices(ctx, status.value if status else None,
                                 enrollment.value if enrollment else None, search or None,
                                 offset, limit)  # fmt: skip
    return DevicePageOut.model_validate(page)


@router.get(
    "/devices/{device}",
    summary="A device's liveness (phi), replicas it hosts, rollouts and audit records",
)
def device_story(
    device: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> DeviceStoryOut:
    return DeviceStoryOut.model_validate(svc.dashboard.device_story(ctx, device))


@router.get(
    "/audit/verification", summary="The audit log's hash chain verified by this control plane"
)
def verify_audit(
    ctx: OperatorContext = Depends(requires(Permission.AUDIT_READ)),
    svc: Services = Depends(services),
) -> AuditVerificationOut:
    return AuditVerificationOut.model_validate(svc.dashboard.verify_audit(ctx))
