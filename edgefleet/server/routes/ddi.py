"""hawkBit DDI API: the device side under `/ddi/{tenant}/controller/v1/{controller_id}`
(base poll, deploymentBase, feedback, cancelAction, configData, installedBase, artifact
downloads with Range and `.MD5SUM`), and the operator side under `/v1/ddi` (DDI targets and
gateway tokens). `docs/interop.md` describes the mapping onto devices and releases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from edgefleet.artifacts.blobstore import parse_range_header
from edgefleet.core.device import Device
from edgefleet.core.updates.ddi import md5sum_line, polling_sleep
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.ddi_auth import ddi_target, ddi_target_enrolling
from edgefleet.server.error_handlers import request_id_of
from edgefleet.server.schemas.ddi import (
    CreateGatewayTokenRequest,
    CreateTargetRequest,
    DdiAckOut,
    DdiActionOut,
    DdiBasePollOut,
    DdiCancelOut,
    DdiConfigOut,
    DdiLinkOut,
    DdiPollingOut,
    DdiStopOut,
    GatewayTokenOut,
    TargetOut,
)
from edgefleet.server.schemas.devices import DeviceOut
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/ddi/{tenant}/controller/v1/{controller_id}", tags=["hawkBit DDI"])
operator_router = APIRouter(prefix="/v1/ddi", tags=["hawkBit DDI"])

MD5SUM_SUFFIX = ".MD5SUM"
# An answer carrying a new secret: no cache keeps it, and it is never compressed (BREACH).
SECRET_HEADERS = {"cache-control": "no-store"}
ActionId = Path(ge=0, le=2**63 - 1, description="The action id (the assignment's serial)")


def _base_url(request: Request, tenant: str, controller_id: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/ddi/{tenant}/controller/v1/{controller_id}"


# The device side.


@router.get("", summary="DDI base poll: polling interval and the links that apply")
async def base_poll(
    request: Request,
    tenant: str,
    controller_id: str,
    device: Device = Depends(ddi_target_enrolling),
    svc: Services = Depends(services),
) -> DdiBasePollOut:
    poll = await run_in_threadpool(svc.ddi.poll, device.id)
    base = _base_url(request, tenant, controller_id)
    links: dict[str, DdiLinkOut] = {}
    if poll.cancel is not None:
        links["cancelAction"] = DdiLinkOut(href=f"{base}/cancelAction/{poll.cancel}")
    elif poll.deployment is not None:
        action, tag = poll.deployment
        links["deploymentBase"] = DdiLinkOut(href=f"{base}/deploymentBase/{action}?c={tag}")
    if poll.installed is not None:
        links["installedBase"] = DdiLinkOut(href=f"{base}/installedBase/{poll.installed}")
    if poll.config_wanted:
        links["configData"] = DdiLinkOut(href=f"{base}/configData")
    polling = DdiPollingOut(sleep=polling_sleep(poll.interval_s))
    return DdiBasePollOut(config=DdiConfigOut(polling=polling), links=links)


@router.get("/deploymentBase/{action_id}", summary="DDI deployment: chunks, handling, window")
async def deployment_base(
    request: Request,
    tenant: str,
    controller_id: str,
    action_id: int = ActionId,
    device: Device = Depends(ddi_target),
    svc: Services = Depends(services),
) -> DdiActionOut:
    base = _base_url(request, tenant, controller_id)
    return DdiActionOut.of(await run_in_threadpool(svc.ddi.deployment, device.id, action_id, base))


@router.post("/deploymentBase/{action_id}/feedback", summary="DDI deployment feedback")
async def deployment_feedback(
    action_id: int = ActionId,
    body: dict[str, Any] = Body(...),
    device: Device = Depends(ddi_target),
    svc: Services = Depends(services),
) -> DdiAckOut:
    await run_in_threadpool(svc.ddi.feedback, device.id, action_id, body)
    return DdiAckOut()


@router.get("/cancelAction/{action_id}", summary="DDI cancel: the action to stop")
async def cancel_action(
    action_id: int = ActionId,
    device: Device = Depends(ddi_target),
    svc: Services = Depends(services),
) -> DdiCancelOut:
    cancel = await run_in_threadpool(svc.ddi.cancellation, device.id, action_id)
    return DdiCancelOut(
        id=cancel["id"], cancel_action=DdiStopOut(stop_id=cancel["cancelAction"]["stopId"])
    )


@router.post("/cancelAction/{action_id}/feedback", summary="DDI cancel feedback")
async def cancel_feedback(
    action_id: int = ActionId,
    body: dict[str, Any] = Body(...),
    device: Device = Depends(ddi_target),
    svc: Services = Depends(services),
) -> DdiAckOut:
    await run_in_threadpool(svc.ddi.cancel_feedback, device.id, action_id, body)
    return DdiAckOut()


@router.put("/configData", summary="DDI configData: the data map onto the device's labels")
async def config_data(
    request: Request,
    body: dict[str, Any] = Body(...),
    device: Device = Depends(ddi_target),
    svc: Services = Depends(services),
) -> DdiAckOut:
    mode = body.get("mode", "merge")
    await run_in_threadpool(svc.ddi.config_data, device.id, body.get("data"), str(mode),
                            request_id_of(request))  # fmt: skip
    return DdiAckOut()


@router.get("/installedBase/{action_id}", summary="DDI installed base: the running release")
async def installed_base(
    request: Request,
    tenant: str,
    controller_id: str,
    action_id: int = ActionId,
    device: Device = Depends(ddi_target),
    svc: Services = Depends(services),
) -> DdiActionOut:
    base = _base_url(request, tenant, controller_id)
    return DdiActionOut.of(await run_in_threadpool(svc.ddi.installed, device.id, action_id, base))


@router.get(
    "/softwaremodules/{module_id}/artifacts/{file_name}",
    summary="DDI artifact download (Range: bytes=START-[END]), or FILE.MD5SUM",
)
async def download_artifact(
    request: Request,
    module_id: str,
    file_name: str,
    device: Device = Depends(ddi_target),
    svc: Services = Depends(services),
) -> Response:
    md5sum = file_name.endswith(MD5SUM_SUFFIX)
    name = file_name.removesuffix(MD5SUM_SUFFIX) if md5sum else file_name
    found = await run_in_threadpool(svc.ddi.artifact, device.id, module_id, name)
    if md5sum:
        return Response(md5sum_line(found.md5, found.file_name), media_type="text/plain")
    header = request.headers.get("range")
    start, end = parse_range_header(header, found.size_bytes) if header else (0, found.size_bytes)
    reader = svc.releases.blobs.open_range(found.sha256, start, end)

    def chunks() -> Iterator[bytes]:
        try:
            yield from reader
        finally:
            reader.close()

    headers = {"accept-ranges": "bytes", "content-length": str(reader.length_bytes),
               "content-disposition": f'attachment; filename="{found.file_name}"'}  # fmt: skip
    if header:
        headers["content-range"] = reader.content_range
    return StreamingResponse(chunks(), status_code=206 if header else 200,
                             media_type="application/octet-stream", headers=headers)  # fmt: skip


# The operator side.


@operator_router.post("/targets", status_code=201, summary="Create an approved DDI target")
def create_target(
    body: CreateTargetRequest,
    response: Response,
    ctx: OperatorContext = Depends(requires(Permission.DEVICES_WRITE)),
    svc: Services = Depends(services),
) -> TargetOut:
    response.headers.update(SECRET_HEADERS)
    device, target, token = svc.ddi.create_target(ctx, body.controller_id, body.labels)
    shown = DeviceOut.of(device, svc.devices.now()).model_dump()
    return TargetOut(
        **shown,
        controller_id=target.controller_id,
        tenant=target.tenant,
        token=token,
        poll_path=f"/ddi/{target.tenant}/controller/v1/{target.controller_id}",
    )


@operator_router.post("/gateway-tokens", status_code=201, summary="Create a DDI GatewayToken")
def create_gateway_token(
    body: CreateGatewayTokenRequest,
    response: Response,
    ctx: OperatorContext = Depends(requires(Permission.ENROLLMENT_TOKENS_WRITE)),
    svc: Services = Depends(services),
) -> GatewayTokenOut:
    response.headers.update(SECRET_HEADERS)
    token, secret = svc.ddi.create_gateway_token(ctx, body.description, body.auto_approve)
    return GatewayTokenOut.of(token, secret)


@operator_router.get("/gateway-tokens", summary="List DDI GatewayTokens (never their secrets)",
                     response_model=list[GatewayTokenOut])  # fmt: skip
def list_gateway_tokens(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[GatewayTokenOut]:
    return [GatewayTokenOut.of(t) for t in svc.ddi.list_gateway_tokens(ctx)]


@operator_router.delete("/gateway-tokens/{token_id}", summary="Revoke a DDI GatewayToken")
def revoke_gateway_token(
    token_id: str,
    ctx: OperatorContext = Depends(requires(Permission.ENROLLMENT_TOKENS_WRITE)),
    svc: Services = Depends(services),
) -> GatewayTokenOut:
    return GatewayTokenOut.of(svc.ddi.revoke_gateway_token(ctx, token_id))
