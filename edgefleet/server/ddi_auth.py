"""Authentication of hawkBit DDI requests: `Authorization: TargetToken TOKEN` (one target)
or `GatewayToken TOKEN` (any target of the token's tenant), checked against the tenant and
controller id of the path (`services/ddi.py`)."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from edgefleet.core.device import Device
from edgefleet.server.composition import services
from edgefleet.server.error_handlers import request_id_of


async def _authenticate(request: Request, tenant: str, controller_id: str, enroll: bool) -> Device:
    return await run_in_threadpool(
        services(request).ddi.authenticate,
        request.headers.get("authorization", ""),
        tenant,
        controller_id,
        enroll,
        request_id_of(request),
    )


async def ddi_target(request: Request, tenant: str, controller_id: str) -> Device:
    """Dependency: the approved DDI device the request's token may act for."""
    return await _authenticate(request, tenant, controller_id, enroll=False)


async def ddi_target_enrolling(request: Request, tenant: str, controller_id: str) -> Device:
    """`ddi_target` for the base poll, where a GatewayToken enrolls an unknown controller
    id (pending until approved, unless the token approves automatically)."""
    return await _authenticate(request, tenant, controller_id, enroll=True)
