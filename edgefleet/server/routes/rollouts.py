"""Operator API for rollouts and release trains."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from edgefleet.core.rollouts.rollout import OperatorCommand
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import Services, requires, services
from edgefleet.server.schemas.rollouts import (
    ApplyReleaseTrainRequest,
    CreateRolloutRequest,
    RolloutCommandRequest,
)
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.release_trains import train_view
from edgefleet.server.services.rollout_report import render_markdown, rollout_summary

router = APIRouter(prefix="/v1", tags=["rollouts"])


@router.post(
    "/rollouts",
    status_code=201,
    summary="Create a rollout from a manifest (200 when an identical one is already active)",
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
        return JSONResponse(svc.rollouts.dry_run(ctx, body.manifest, supersede=body.supersede))
    created = svc.rollouts.create(ctx, body.manifest, supersede=body.supersede)
    content = {
        "created": created.created,
        "superseded": list(created.superseded),
        "rollout": rollout_summary(created.record),
    }
    return JSONResponse(content, status_code=201 if created.created else 200)


@router.get("/rollouts", summary="List rollouts, newest first")
def list_rollouts(
    active: bool = Query(False, description="Only rollouts not finished yet"),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    return svc.rollouts.list_rollouts(ctx, active_only=active)


@router.get("/rollouts/{rollout}", summary="A rollout's status: waves, gates, devices")
def show_rollout(
    rollout: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    return svc.rollouts.status(ctx, rollout)


@router.get(
    "/rollouts/{rollout}/report",
    summary="The rollout's report: timeline, waves, gates, skipped/failed devices, rollback",
    responses={200: {"content": {"application/json": {}, "text/markdown": {}}}},
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
    return JSONResponse(report)


@router.post(
    "/rollouts/{rollout}/approve",
    summary="Approve a rollout awaiting a second operator (not its requester)",
)
def approve_rollout(
    rollout: str,
    body: RolloutCommandRequest | None = None,
    ctx: OperatorContext = Depends(requires(Permission.ROLLOUTS_APPROVE)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    return rollout_summary(svc.rollouts.approve(ctx, rollout, body.note if body else ""))


@router.post("/rollouts/{rollout}/{command}", summary="pause, resume, abort or roll back")
def command_rollout(
    rollout: str,
    command: OperatorCommand,
    body: RolloutCommandRequest | None = None,
    ctx: OperatorContext = Depends(requires(Permission.ROLLOUTS_WRITE)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    record = svc.rollouts.command(ctx, rollout, command, body.note if body else "")
    return rollout_summary(record)


@router.put("/release-trains", summary="Create or update a release train from a manifest")
def apply_release_train(
    body: ApplyReleaseTrainRequest,
    dry_run: bool = Query(False, description="Decide everything, store nothing"),
    ctx: OperatorContext = Depends(requires(Permission.ROLLOUTS_WRITE)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    record, action = svc.release_trains.apply(ctx, body.manifest, dry_run=dry_run)
    return {"action": action, "train": train_view(record), "dry_run": dry_run}


@router.get("/release-trains", summary="List release trains")
def list_release_trains(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    return [train_view(t) for t in svc.release_trains.list_trains(ctx)]


@router.get("/release-trains/{name}", summary="Show a release train")
def show_release_train(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    return train_view(svc.release_trains.get(ctx, name))
