"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from edgefleet import __version__
from edgefleet.server.auth import no_credentials
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.health import HealthOut, ReadinessOut

router = APIRouter(tags=["health"])


@router.get(
    "/healthz", summary="Liveness: the process is serving", dependencies=[Depends(no_credentials)]
)
def healthz() -> HealthOut:
    return HealthOut(status="ok", version=__version__)


@router.get(
    "/readyz",
    summary="Readiness: the database answers; which replica this is",
    dependencies=[Depends(no_credentials)],
)
async def readyz(request: Request, svc: Services = Depends(services)) -> ReadinessOut:
    """503 store_unavailable when the database does not answer. `leading`: the controller
    leases this replica acts under now; `fenced_writes_refused`: writes of its controllers
    that found their lease taken over (after a pause past the lease's end)."""
    await run_in_threadpool(svc.db.ping)
    keeper = request.app.state.lease_keeper
    return ReadinessOut(
        status="ready",
        replica=svc.settings.replica_id,
        roles=svc.settings.roles.split(","),
        leading=keeper.leading() if keeper is not None else [],
        fenced_writes_refused=svc.db.fenced_writes_refused,
    )
