"""Operator API for rollouts and release trains."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import PlainTextResponse

from edgefleet.core.rollouts.rollout import OperatorCommand
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.routes.typed_response import typed_response
from edgefleet.server.schemas.rollouts import (
    AppliedReleaseTrainOut,
    ApplyReleaseTrainRequest,
    CreatedRolloutOut,
    CreateRolloutRequest,
    ReleaseTrainOut,
    RolloutCommandRequest,
    RolloutDryRunOut,
    RolloutListItemOut,
    RolloutReportOut,
    RolloutStatusOut,
    RolloutSummaryOut,
)
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.release_trains import train_view
from edgefleet.server.services.rollout_report import render_markdown, rollout_summary

router = APIRouter(prefix="/v1", tags=["rollouts"])


@router.post(
    "/rollouts",
    status_code=201,
    summary="Create a rollout from a manifest (200 when an identical one is already active)",
    response_model=CreatedRolloutOut | RolloutDryRunOut,
    responses={409: {"description": "Devices in another active rollout, or name in use"}},
)
def create_rollout(
    body: CreateRolloutRequest,
    dry_run: bool = Query(
        False,
        description="Decide everything, store nothing: answer 200 with the rollout, "
        "its devices and its wave plan",
    ),
    ctx: OperatorContext = Depends(requires(Permission.ROLLOUTS_WRITE)),
    svc: Services = Depends(services),
) -> Response:
    if dry_run:
        preview = svc.rollouts.dry_run(ctx, body.manifest, supersede=body.supersede)
        return typed_response(RolloutDryRunOut.model_validate(preview))
    created = svc.rollouts.create(ctx, body.manifest, supersede=body.supersede)
    out = CreatedRolloutOut(
        created=created.created,
        superseded=list(created.superseded),
        rollout=RolloutSummaryOut.model_validate(rollout_summary(created.record)),
    )
    return typed_response(out, status_code=201 if created.created else 200)


@router.get("/rollouts", summary="List rollouts, newest first")
def list_rollouts(
    active: bool = Query(False, description="Only rollouts not finished yet"),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[RolloutListItemOut]:
    found = svc.rollouts.list_rollouts(ctx, active_only=active)
    return [RolloutListItemOut.model_validate(r) for r in found]


@router.get("/rollouts/{rollout}", summary="A rollout's status: waves, gates, devices")
def show_rollout(
    rollout: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> RolloutStatusOut:
    return RolloutStatusOut.model_validate(svc.rollouts.status(ctx, rollout))


@router.get(
    "/rollouts/{rollout}/report",
    summary="The rollout's report: timeline, waves, gates, skipped/failed devices, rollback",
    response_model=RolloutReportOut,
    responses={200: {"content": {"text/markdown": {}}}},
)
def rollout_report(
    rollout: str,
    format: Literal["json", "markdown"] = Query("json", description="json or markdown"),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> Response:
    report = svc.rollouts.report(ctx, rollout)
    if format == "markdown":
        return PlainTextResponse(render_markdown(report), media_type="text/markdown")
    return typed_response(RolloutReportOut.model_validate(report))


@router.post(
    "/rollouts/{rollout}/approve",
    summary="Approve a rollout awaiting a second operator (not its requester)",
)
def approve_rollout(
    rollout: str,
    body: RolloutCommandRequest | None = None,
    ctx: OperatorContext = Depends(requires(Permission.ROLLOUTS_APPROVE)),
    svc: Services = Depends(services),
) -> RolloutSummaryOut:
    record = svc.rollouts.approve(ctx, rollout, body.note if body else "")
    return RolloutSummaryOut.model_validate(rollout_summary(record))


@router.post("/rollouts/{rollout}/{command}", summary="pause, resume, abort or roll back")
def command_rollout(
    rollout: str,
    command: OperatorCommand,
    body: RolloutCommandRequest | None = None,
    ctx: OperatorContext = Depends(requires(Permission.ROLLOUTS_WRITE)),
    svc: Services = Depends(services),
) -> RolloutSummaryOut:
    record = svc.rollouts.command(ctx, rollout, command, body.note if body else "")
    return RolloutSummaryOut.model_validate(rollout_summary(record))


@router.put("/release-trains", summary="Create or update a release train from a manifest")
def apply_release_train(
    body: ApplyReleaseTrainRequest,
    dry_run: bool = Query(False, description="Decide everything, store nothing"),
    ctx: OperatorContext = Depends(requires(Permission.ROLLOUTS_WRITE)),
    svc: Services = Depends(services),
) -> AppliedReleaseTrainOut:
    record, action = svc.release_trains.apply(ctx, body.manifest, dry_run=dry_run)
    train = ReleaseTrainOut.model_validate(train_view(record))
    return AppliedReleaseTrainOut(action=action, train=train, dry_run=dry_run)


@router.get("/release-trains", summary="List release trains")
def list_release_trains(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[ReleaseTrainOut]:
    trains = svc.release_trains.list_trains(ctx)
    return [ReleaseTrainOut.model_validate(train_view(t)) for t in trains]


@router.get("/release-trains/{name}", summary="Show a release train")
def show_release_train(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> ReleaseTrainOut:
    return ReleaseTrainOut.model_validate(train_view(svc.release_trains.get(ctx, name)))
