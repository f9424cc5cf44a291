"""`GET /metrics`: the Prometheus exposition of the control plane and fleet aggregates.

Unauthenticated, like most exporters: it reveals counts, never device ids or labels. Put it
behind the reverse proxy's access rules if even counts are sensitive.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from edgefleet.server.auth import Services, no_credentials, services
from edgefleet.server.prometheus import CONTENT_TYPE, render

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format 0.0.4)",
    response_class=PlainTextResponse,
    dependencies=[Depends(no_credentials)],
)
async def metrics(svc: Services = Depends(services)) -> PlainTextResponse:
    families = await run_in_threadpool(svc.fleet_metrics.families)
    return PlainTextResponse(render(families), media_type=CONTENT_TYPE)
