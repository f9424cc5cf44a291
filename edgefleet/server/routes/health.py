"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from edgefleet import __version__
from edgefleet.server.auth import Services, no_credentials, services

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is serving",
            dependencies=[Depends(no_credentials)])
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", summary="Readiness: the database answers",
            dependencies=[Depends(no_credentials)])
async def readyz(svc: Services = Depends(services)) -> dict[str, str]:
    await run_in_threadpool(svc.db.ping)
    return {"status": "ready"}
