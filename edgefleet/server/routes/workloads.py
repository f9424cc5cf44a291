"""Operator API for workloads, placements and migrations; the endpoints clients follow; and
the device route that receives state archives (checkpoints) for migrations."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from edgefleet.artifacts.blobstore import validate_sha256
from edgefleet.core.device import Device
from edgefleet.core.workloads.move import MOVES_KEPT_PER_WORKLOAD
from edgefleet.errors import InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.security.sealed_stream import SEALED_ARCHIVE_CONTENT_TYPE
from edgefleet.server.auth import DeviceUpload, device_or_operator, requires, signed_device_upload
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.blobs import StoredBlobOut
from edgefleet.server.schemas.workloads import (
    AppliedWorkloadOut,
    ApplyWorkloadRequest,
    ExplanationOut,
    MigrateRequest,
    MigrationOut,
    MoveOut,
    NodeOut,
    PlacementOut,
    ServiceEndpointsOut,
    WorkloadStatusOut,
)
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1", tags=["workloads"])


@router.put("/workloads/{name}", summary="Create or update a workload from its manifest")
def apply_workload(
    name: str,
    body: ApplyWorkloadRequest,
    response: Response,
    dry_run: bool = Query(False, description="Decide everything, store nothing"),
    ctx: OperatorContext = Depends(requires(Permission.WORKLOADS_WRITE)),
    svc: Services = Depends(services),
) -> AppliedWorkloadOut:
    meta = body.manifest.get("metadata")
    given = meta.get("name") if "spec" in body.manifest and isinstance(meta, dict) \
        else body.manifest.get("name")  # fmt: skip
    if given != name:
        raise InvalidInput(f"the manifest names workload {given!r}, the path {name!r}")
    record, outcome = svc.workloads.apply(ctx, body.manifest, dry_run=dry_run)
    response.status_code = 201 if outcome == "created" and not dry_run else 200
    return AppliedWorkloadOut.of(record, outcome, dry_run)


@router.get("/workloads", summary="List workloads with where their replicas run")
def list_workloads(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[WorkloadStatusOut]:
    return [WorkloadStatusOut.of(s) for s in svc.workloads.list_workloads(ctx)]


@router.get("/workloads/{name}", summary="Show a workload: spec, placement, status")
def show_workload(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> WorkloadStatusOut:
    return WorkloadStatusOut.of(svc.workloads.get(ctx, name))


@router.delete("/workloads/{name}", status_code=204, summary="Delete a workload")
def delete_workload(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.WORKLOADS_WRITE)),
    svc: Services = Depends(services),
) -> Response:
    svc.workloads.delete(ctx, name)
    return Response(status_code=204)


@router.post(
    "/workloads/{name}/migrations",
    status_code=201,
    summary="Migrate a replica to a node (or the best node matching a selector)",
)
def migrate_workload(
    name: str,
    body: MigrateRequest,
    ctx: OperatorContext = Depends(requires(Permission.WORKLOADS_WRITE)),
    svc: Services = Depends(services),
) -> MigrationOut:
    migration = svc.workloads.migrate(ctx, name, body.replica, body.to, body.selector)
    return MigrationOut.of(migration, svc.workloads.device_names())


@router.post(
    "/workloads/{name}/migrations/abort",
    summary="Abort the workload's migrations: replicas return to their sources",
)
def abort_migrations(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.WORKLOADS_WRITE)),
    svc: Services = Depends(services),
) -> list[MigrationOut]:
    aborted = svc.workloads.abort(ctx, name)
    names = svc.workloads.device_names()
    return [MigrationOut.of(m, names) for m in aborted]


@router.get("/workloads/{name}/migrations", summary="The workload's migrations, newest first")
def list_migrations(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[MigrationOut]:
    found, names = svc.workloads.migrations(ctx, name)
    return [MigrationOut.of(m, names) for m in found]


@router.get("/workloads/{name}/moves", summary="The workload's replica moves, newest first")
def list_moves(
    name: str,
    limit: int = Query(MOVES_KEPT_PER_WORKLOAD, ge=1, le=MOVES_KEPT_PER_WORKLOAD),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[MoveOut]:
    found, names = svc.workloads.moves(ctx, name, limit)
    return [MoveOut.of(m, names) for m in found]


@router.get("/placements/{name}", summary="Where each replica is placed, and why")
def show_placement(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> PlacementOut:
    return PlacementOut.of(svc.workloads.get(ctx, name))


@router.get(
    "/placements/{name}/explain",
    summary="Each candidate node's score terms, or why it was excluded",
)
def explain_placement(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> ExplanationOut:
    result, names = svc.workloads.explain(ctx, name)
    return ExplanationOut.of(result, names)


@router.get("/nodes", summary="Nodes as the workload controllers see them")
def list_nodes(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[NodeOut]:
    now = svc.workloads.now()
    return [NodeOut.of(v, now) for v in svc.workloads.nodes(ctx)]


@router.get(
    "/services/{name}/endpoints",
    summary="A workload's service endpoints with traffic weights (clients follow them)",
)
def service_endpoints(
    name: str,
    _who: Device | OperatorContext = Depends(device_or_operator),
    svc: Services = Depends(services),
) -> ServiceEndpointsOut:
    return ServiceEndpointsOut.of(svc.workloads.endpoints(name))


@router.put(
    "/checkpoints/{device_id}/{sha256}",
    status_code=201,
    summary="Upload a state archive for a migration (device, signed; sealed to the "
    "ingest key as application/x-edgefleet-archive-sealed, or plain)",
)
async def upload_checkpoint(
    device_id: str,
    sha256: str,
    request: Request,
    upload: DeviceUpload = Depends(signed_device_upload),
    svc: Services = Depends(services),
) -> StoredBlobOut:
    validate_sha256(sha256)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    sealed = media == SEALED_ARCHIVE_CONTENT_TYPE
    declared = request.headers.get("content-length")
    # A sealed archive's length is not its plaintext's: the limits apply as it is opened.
    size = int(declared) if declared and declared.isdigit() and not sealed else None
    incoming = await run_in_threadpool(svc.checkpoints.receive, upload.device.id, sha256, size)
    with incoming:  # on any failure, the bytes received so far are deleted
        if sealed:  # opened as it arrives: the signature covers the sealed bytes
            opener = svc.sealing.stream_unsealer(upload.device.id)
            received = hashlib.sha256()
            async for chunk in request.stream():
                received.update(chunk)
                incoming.write(await run_in_threadpool(opener.feed, chunk))
            incoming.write(opener.finish())
            body_sha256 = received.hexdigest()
        else:
            async for chunk in request.stream():
                incoming.write(chunk)
            body_sha256 = incoming.sha256
        device = await upload.verify(body_sha256)
        info = await run_in_threadpool(svc.checkpoints.store, device.id, sha256, incoming)
    return StoredBlobOut(sha256=info.sha256, size_bytes=info.size_bytes)
