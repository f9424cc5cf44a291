"""Operator API for artifacts, releases, signing and assignment."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from edgefleet.core.durations import parse_duration
from edgefleet.core.updates.release import Ref, parse_ref
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.devices import DeviceOut
from edgefleet.server.schemas.releases import (
    ArtifactOut,
    AssignRequest,
    AssignResponse,
    CreateArtifactRequest,
    CreateReleaseRequest,
    DeltaOut,
    ReleaseOut,
    SkippedDevice,
)
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.releases import ServiceFile

router = APIRouter(prefix="/v1", tags=["artifacts and releases"])


@router.post("/artifacts", status_code=201, summary="Register an uploaded blob as an artifact")
def create_artifact(
    body: CreateArtifactRequest,
    ctx: OperatorContext = Depends(requires(Permission.ARTIFACTS_WRITE)),
    svc: Services = Depends(services),
) -> ArtifactOut:
    artifact = svc.releases.register_artifact(
        ctx, body.name, body.version, body.kind, body.sha256, body.file_name, body.requires
    )
    return ArtifactOut.of(artifact)


@router.get("/artifacts", summary="List artifacts", response_model=list[ArtifactOut])
def list_artifacts(
    name: str | None = Query(None, description="Only versions of this artifact"),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[ArtifactOut]:
    return [ArtifactOut.of(a) for a in svc.releases.list_artifacts(ctx, name)]


@router.get("/artifacts/{name}/deltas", summary="Delta sizes between versions of an artifact")
def artifact_deltas(
    name: str,
    compute: bool = Query(False, description="Schedule consecutive pairs not computed yet"),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[DeltaOut]:
    return [DeltaOut.model_validate(d) for d in svc.releases.delta_stats(ctx, name, compute)]


@router.get("/artifacts/{name}/{version}", summary="Show one artifact version")
def show_artifact(
    name: str,
    version: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> ArtifactOut:
    return ArtifactOut.of(svc.releases.get_artifact(ctx, Ref(name, version)))


@router.post(
    "/releases",
    status_code=201,
    summary="Create a release from artifacts (and its service manifest)",
)
def create_release(
    body: CreateReleaseRequest,
    ctx: OperatorContext = Depends(requires(Permission.RELEASES_WRITE)),
    svc: Services = Depends(services),
) -> ReleaseOut:
    ref = parse_ref(f"{body.name}@{body.version}", "release")
    artifacts = [parse_ref(a) for a in body.artifacts]
    service = (
        None
        if body.service is None
        else ServiceFile(body.service.file_name, body.service.content.encode())
    )
    return ReleaseOut.of(svc.releases.create_release(ctx, ref, artifacts, service))


@router.get("/releases", summary="List releases", response_model=list[ReleaseOut])
def list_releases(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[ReleaseOut]:
    return [ReleaseOut.of(r) for r in svc.releases.list_releases(ctx)]


@router.get("/releases/{name}/{version}", summary="Show a release and its files")
def show_release(
    name: str,
    version: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> ReleaseOut:
    release, files = svc.releases.get_release(ctx, Ref(name, version))
    return ReleaseOut.of(release, files)


@router.post(
    "/releases/{name}/{version}/staged-targets",
    summary="The next TUF targets metadata with this release added, for operators to sign",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
def stage_release(
    name: str,
    version: str,
    expires: str | None = Query(None, description="Targets lifetime, e.g. 90d"),
    ctx: OperatorContext = Depends(requires(Permission.RELEASES_WRITE)),
    svc: Services = Depends(services),
) -> Response:
    lifetime = parse_duration(expires) if expires else None
    unsigned = svc.trust.stage_release(ctx, Ref(name, version), lifetime)
    return Response(unsigned, media_type="application/json")


@router.post(
    "/releases/{name}/{version}/signed-targets",
    summary="Publish targets metadata signed by the targets keys (the body is the metadata)",
)
async def publish_release(
    name: str,
    version: str,
    request: Request,
    ctx: OperatorContext = Depends(requires(Permission.RELEASES_WRITE)),
    svc: Services = Depends(services),
) -> ReleaseOut:
    signed = await request.body()
    ref = Ref(name, version)
    await run_in_threadpool(svc.trust.publish, ctx, ref, signed)
    release, files = await run_in_threadpool(svc.releases.get_release, ctx, ref)
    return ReleaseOut.of(release, files)


@router.post("/releases/{name}/{version}/assign", summary="Assign to a device or a selector")
def assign_release(
    name: str,
    version: str,
    body: AssignRequest,
    ctx: OperatorContext = Depends(requires(Permission.DEVICES_WRITE)),
    svc: Services = Depends(services),
) -> AssignResponse:
    result = svc.releases.assign(
        ctx,
        Ref(name, version),
        device=body.device,
        selector=body.selector,
        stage_only=body.stage_only,
    )
    return AssignResponse(
        assigned=[d.id for d in result.assigned],
        skipped=[
            SkippedDevice(id=s.device_id, name=s.name, reason=s.reason) for s in result.skipped
        ],
    )


@router.post("/devices/{device}/activate", summary="Install a release delivered --stage-only")
def activate(
    device: str,
    ctx: OperatorContext = Depends(requires(Permission.DEVICES_WRITE)),
    svc: Services = Depends(services),
) -> DeviceOut:
    return DeviceOut.of(svc.releases.activate(ctx, device), svc.devices.now())
