"""Federated training: the operators' jobs and the devices' round steps (msgpack).

POST /v1/training                        apply a FederatedTraining manifest
GET  /v1/training                        every job's status
GET  /v1/training/{name}                 one job's status
GET  /v1/training/{name}/report          its status with every round's figures
POST /v1/training/{name}/{pause|resume|cancel}

GET  /v1/devices/{id}/training/{job}/rounds/{n}    the round as the device sees it
POST /v1/devices/{id}/training/{job}/rounds/{n}    the device's answer to its step
GET  /v1/devices/{id}/training/{job}/model         the round's model: steps or weights
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from edgefleet.core.device import Device
from edgefleet.core.learning.job import JobStatus
from edgefleet.errors import NotFound, PayloadTooLarge
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires, signed_device
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.training import AppliedTrainingOut, TrainingJobOut
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1", tags=["training"])

MSGPACK = "application/msgpack"
MAX_ANSWER_BYTES = 16 << 20
_ACTIONS = {"pause": JobStatus.PAUSED, "resume": JobStatus.RUNNING, "cancel": JobStatus.CANCELLED}


@router.post("/training", summary="Apply a FederatedTraining manifest")
def apply_training(
    response: Response,
    document: dict[str, Any] = Body(...),
    dry_run: bool = Query(False, description="Check the manifest and its model; store nothing"),
    ctx: OperatorContext = Depends(requires(Permission.RELEASES_WRITE)),
    svc: Services = Depends(services),
) -> AppliedTrainingOut:
    status, created = svc.training.apply(ctx, document, dry_run)
    response.status_code = 201 if created and not dry_run else 200
    return AppliedTrainingOut(**status, created=created)


@router.get("/training", summary="Every training job's status")
def list_training(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[TrainingJobOut]:
    return [TrainingJobOut(**job) for job in svc.training.jobs(ctx)]


@router.get("/training/{name}", summary="A training job's status")
def training_status(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> TrainingJobOut:
    return TrainingJobOut(**svc.training.status(ctx, name))


@router.get("/training/{name}/report", summary="A training job's rounds, figure by figure")
def training_report(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> TrainingJobOut:
    return TrainingJobOut(**svc.training.status(ctx, name))


@router.post("/training/{name}/{action}", summary="Pause, resume or cancel a training job")
def change_training(
    name: str,
    action: str,
    ctx: OperatorContext = Depends(requires(Permission.RELEASES_WRITE)),
    svc: Services = Depends(services),
) -> TrainingJobOut:
    if action not in _ACTIONS:
        raise NotFound(f"no action {action!r} (pause, resume, cancel)", code="not_found")
    svc.training.set_status(ctx, name, _ACTIONS[action])
    return TrainingJobOut(**svc.training.status(ctx, name))


@router.get("/devices/{device_id}/training/{job}/rounds/{number}", summary="A training round")
async def round_view(
    job: str,
    number: int,
    device: Device = Depends(signed_device),
    svc: Services = Depends(services),
) -> Response:
    body = await run_in_threadpool(svc.training.device_view, device, job, number)
    return Response(body, media_type=MSGPACK)


@router.post("/devices/{device_id}/training/{job}/rounds/{number}", summary="Answer a step")
async def round_answer(
    request: Request,
    job: str,
    number: int,
    device: Device = Depends(signed_device),
    svc: Services = Depends(services),
) -> Response:
    body = await request.body()
    if len(body) > MAX_ANSWER_BYTES:
        raise PayloadTooLarge(f"training answer over {MAX_ANSWER_BYTES} bytes")
    answer = await run_in_threadpool(svc.training.device_answer, device, job, number, body)
    return Response(answer, media_type=MSGPACK)


@router.get("/devices/{device_id}/training/{job}/model", summary="A training round's model")
async def round_model(
    job: str,
    have: str = Query("", max_length=64),
    want: str = Query(..., min_length=64, max_length=64),
    device: Device = Depends(signed_device),
    svc: Services = Depends(services),
) -> Response:
    body = await run_in_threadpool(svc.training.device_model, device, job, have, want)
    return Response(body, media_type=MSGPACK)
