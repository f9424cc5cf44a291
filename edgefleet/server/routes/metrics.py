"""`GET /metrics`: the Prometheus exposition of the control plane and fleet aggregates.

Unauthenticated, like most exporters: it reveals counts, never device ids or labels. Put it
behind the reverse proxy's access rules if even counts are sensitive. `?name[]=FAMILY`
(repeated) limits the answer to those families, as Prometheus' client libraries do.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from edgefleet.server.auth import no_credentials
from edgefleet.server.composition import Services, services
from edgefleet.server.prometheus import CONTENT_TYPE, render

router = APIRouter(tags=["metrics"])
MAX_NAMES = 100


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format 0.0.4)",
    response_class=PlainTextResponse,
    dependencies=[Depends(no_credentials)],
)
async def metrics(
    svc: Services = Depends(services),
    names: list[str] | None = Query(
        None,
        alias="name[]",
        max_length=MAX_NAMES,
        description="Only these metric families (repeat the parameter); all when absent.",
    ),
) -> PlainTextResponse:
    families = await run_in_threadpool(svc.fleet_metrics.families, names)
    return PlainTextResponse(render(families), media_type=CONTENT_TYPE)
