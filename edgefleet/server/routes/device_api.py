"""Device API: enrollment, heartbeats, and the long-polled desired-state document.

Every route but /v1/enroll requires a request signed by an approved device; /v1/enroll
requires a request signed by the key being enrolled (proof of possession). The
desired-state document goes out with the control plane's signature over its exact bytes,
by the online key the operators' root names (security/desired_signature.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from edgefleet.core.desired import heartbeat_interval_of
from edgefleet.core.device import Device
from edgefleet.security.desired_signature import HEADER as DESIRED_SIGNATURE_HEADER
from edgefleet.security.request_signing import read_signed_headers
from edgefleet.server.auth import Services, no_credentials, request_target, services, signed_device
from edgefleet.server.error_handlers import request_id_of
from edgefleet.server.schemas import EnrollRequest, EnrollResponse, ReportRequest, ReportResponse

router = APIRouter(prefix="/v1", tags=["device API"])


@router.post(
    "/enroll",
    summary="Enroll a device with an enrollment token",
    dependencies=[Depends(no_credentials)],
)
async def enroll(
    request: Request, body: EnrollRequest, svc: Services = Depends(services)
) -> EnrollResponse:
    raw = await request.body()
    signed = read_signed_headers(request.headers)
    device = await run_in_threadpool(
        svc.device_link.enroll,
        signed,
        request.method,
        request_target(request),
        raw,
        request_id_of(request),
        body.enrollment_token,
        body.public_key,
        body.name,
        body.labels,
        body.inventory.model_dump(),
        body.heartbeat_interval_s,
    )
    root = svc.trust.root_bytes()
    return EnrollResponse(
        device_id=device.id,
        enrollment=device.enrollment,
        heartbeat_interval_s=device.heartbeat_interval_s,
        trusted_root=json.loads(root) if root else None,
        root_rotations=[json.loads(r) for r in svc.trust.root_rotations()],
    )


@router.post(
    "/devices/{device_id}/report",
    summary="Heartbeat with inventory and status",
    response_model_exclude_none=True,
)
async def report(
    device_id: str,
    body: ReportRequest,
    device: Device = Depends(signed_device),
    svc: Services = Depends(services),
) -> ReportResponse:
    status = body.release.model_dump(mode="json") if body.release else {}
    saved = await run_in_threadpool(
        svc.device_link.report,
        device,
        body.applied_generation,
        body.inventory.model_dump() if body.inventory else None,
        status,
        body.workloads.model_dump(mode="json") if body.workloads else None,
        body.node.model_dump(mode="json") if body.node else None,
    )
    old = device.release_status or {}
    if (status.get("serial"), status.get("state")) != (old.get("serial"), old.get("state")):
        svc.rollout_controller.wake(device.id)  # an install moved on: its rollout may too
    return ReportResponse(
        desired_generation=saved.desired_generation,
        heartbeat_interval_s=heartbeat_interval_of(saved),
        inventory_optional=True if body.inventory else None,
    )


def _generation_of(etag: str | None) -> int | None:
    if not etag:
        return None
    value = etag.strip().removeprefix("W/").strip('"')
    return int(value) if value.isdigit() else None


@router.get(
    "/devices/{device_id}/desired",
    summary="Desired state; with If-None-Match and `wait`, a long poll",
    responses={304: {"description": "Unchanged within the wait"}},
)
async def desired(
    request: Request,
    device_id: str,
    wait: float = Query(0, ge=0, le=300, description="Seconds to hold the request open"),
    device: Device = Depends(signed_device),
    svc: Services = Depends(services),
) -> Response:
    known = _generation_of(request.headers.get("if-none-match"))
    deadline = time.monotonic() + min(wait, svc.settings.long_poll_max_s)
    while True:
        with svc.watch.subscribe(device.id) as changed:
            doc = await run_in_threadpool(svc.device_link.desired, device.id)
            etag = f'"{doc["generation"]}"'
            if known is None or doc["generation"] != known:
                return _signed_document(svc, doc, etag)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or svc.watch.closed:  # closed: the server is shutting down
                return Response(status_code=304, headers={"etag": etag})
            # Changes made by another replica: the watch re-reads the generations of all
            # waiting devices together and wakes this request if this one moved.
            svc.watch.note(device.id, doc["generation"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=remaining)


def _signed_document(svc: Services, doc: dict[str, Any], etag: str) -> Response:
    """The document as JSON bytes with the control plane's signature over exactly them."""
    body = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    headers = {"etag": etag}
    signature = svc.trust.sign_desired(body)
    if signature is not None:
        headers[DESIRED_SIGNATURE_HEADER] = signature
    return Response(body, media_type="application/json", headers=headers)
