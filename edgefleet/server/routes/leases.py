"""`GET /v1/leases`: the controller leases, which replica holds each, and until when."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from edgefleet.core.lease import Lease
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import Services, requires, services
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.leases import stored_leases

router = APIRouter(prefix="/v1/leases", tags=["replicas"])


class LeaseOut(BaseModel):
    name: str = Field(
        description="The controller: housekeeping, rollout-controller, workload-controllers."
    )
    holder: str = Field(description="The replica id that holds (or last held) the lease.")
    token: int = Field(description="Fencing token: grows by one at every acquisition.")
    expires_at: datetime = Field(description="When the lease lapses unless renewed.")
    live: bool = Field(description="Whether expires_at is still ahead (this replica's clock).")

    @classmethod
    def of(cls, lease: Lease, now: datetime) -> LeaseOut:
        return cls(name=lease.name, holder=lease.holder, token=lease.token,
                   expires_at=lease.expires_at, live=lease.is_live(now))  # fmt: skip


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
