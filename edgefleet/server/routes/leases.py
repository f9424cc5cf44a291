"""`GET /v1/leases`: the controller leases, which replica holds each, and until when."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.leases import LeaseOut
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.leases import stored_leases

router = APIRouter(prefix="/v1/leases", tags=["replicas"])


@router.get(
    "",
    summary="List the controller leases: holder replica, token, expiry",
    response_model=list[LeaseOut],
)
async def list_leases(
    _ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[LeaseOut]:
    leases = await run_in_threadpool(stored_leases, svc.db)
    now = datetime.now(UTC)
    return [LeaseOut.of(lease, now) for lease in leases]
