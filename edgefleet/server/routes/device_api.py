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
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from edgefleet.core.device import Device
from edgefleet.core.protocol import (
    DesiredState,
    EnrollAnswer,
    EnrollRequest,
    Report,
    ReportAnswer,
    from_json,
)
from edgefleet.core.protocol import to_json as protocol_json
from edgefleet.core.protocol.codec import json_schema
from edgefleet.errors import Unavailable
from edgefleet.security.desired_signature import HEADER as DESIRED_SIGNATURE_HEADER
from edgefleet.security.request_signing import read_signed_headers
from edgefleet.server.auth import no_credentials, request_target, signed_device
from edgefleet.server.composition import Services, services
from edgefleet.server.error_handlers import error_response, request_id_of
from edgefleet.server.services.ingest import RETRY_AFTER_S, DeviceIngest, Message

router = APIRouter(prefix="/v1", tags=["device API"])


def request_body(kind: type) -> dict[str, Any]:
    """A device route's request body in the OpenAPI document: the protocol's JSON schema
    (the route decodes the body with the protocol, the one place it is checked)."""
    schema = json_schema(kind)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def answer_body(kind: type) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": "OK", "content": {"application/json": {"schema": json_schema(kind)}}}
    }


def answer(message: object) -> Response:
    return Response(protocol_json(message), media_type="application/json")


def device_ingest(request: Request) -> DeviceIngest:
    """Dependency: the replica's batched ingest of device messages (services/ingest.py)."""
    ingest: DeviceIngest = request.app.state.ingest
    return ingest


async def ingested(
    request: Request, ingest: DeviceIngest, message: Message, device: Device
) -> Response:
    """`message` stored through the batched ingest; its answer, sent once it is stored. A
    full queue is 503 with Retry-After (the device backs off and sends it again)."""
    try:
        return answer(await ingest.submit(message, device))
    except Unavailable as e:
        response = error_response(request, 503, e.code, e.message)
        response.headers["retry-after"] = str(RETRY_AFTER_S)
        return response


@router.post(
    "/enroll",
    summary="Enroll a device with an enrollment token",
    dependencies=[Depends(no_credentials)],
    openapi_extra=request_body(EnrollRequest),
    responses=answer_body(EnrollAnswer),
    response_class=JSONResponse,
)
async def enroll(request: Request, svc: Services = Depends(services)) -> Response:
    raw = await request.body()
    body = from_json(EnrollRequest, raw)
    signed = read_signed_headers(request.headers)
    device = await run_in_threadpool(
        svc.device_link.enroll,
        signed,
        request.method,
        request_target(request),
        raw,
        request_id_of(request),
        body,
    )
    root = svc.trust.root_bytes()
    return answer(
        EnrollAnswer(
            device_id=device.id,
            enrollment=device.enrollment,
            heartbeat_interval_s=device.heartbeat_interval_s,
            trusted_root=json.loads(root) if root else None,
            root_rotations=tuple(json.loads(r) for r in svc.trust.root_rotations()),
        )
    )


@router.post(
    "/devices/{device_id}/report",
    summary="Heartbeat with inventory and status",
    openapi_extra=request_body(Report),
    responses=answer_body(ReportAnswer),
    response_class=JSONResponse,
)
async def report(
    request: Request,
    device_id: str,
    device: Device = Depends(signed_device),
    ingest: DeviceIngest = Depends(device_ingest),
    svc: Services = Depends(services),
) -> Response:
    body = from_json(Report, await request.body())
    response = await ingested(request, ingest, body, device)
    if response.status_code == 200:
        svc.metrics.reports_ingested.inc("http")
    return response


def _generation_of(etag: str | None) -> int | None:
    if not etag:
        return None
    value = etag.strip().removeprefix("W/").strip('"')
    return int(value) if value.isdigit() else None


@router.get(
    "/devices/{device_id}/desired",
    summary="Desired state; with If-None-Match and `wait`, a long poll",
    responses={**answer_body(DesiredState), 304: {"description": "Unchanged within the wait"}},
    response_class=JSONResponse,
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
            etag = f'"{doc.generation}"'
            if known is None or doc.generation != known:
                return _signed_document(svc, doc, etag)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or svc.watch.closed:  # closed: the server is shutting down
                return Response(status_code=304, headers={"etag": etag})
            # Changes made by another replica: the watch re-reads the generations of all
            # waiting devices together and wakes this request if this one moved.
            svc.watch.note(device.id, doc.generation)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=remaining)


def _signed_document(svc: Services, doc: DesiredState, etag: str) -> Response:
    """The document as JSON bytes with the control plane's signature over exactly them."""
    body = protocol_json(doc)
    headers = {"etag": etag}
    signature = svc.trust.sign_desired(body)
    if signature is not None:
        headers[DESIRED_SIGNATURE_HEADER] = signature
    return Response(body, media_type="application/json", headers=headers)
