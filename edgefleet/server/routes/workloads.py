"""Operator API for workloads, placements and migrations; the endpoints clients follow; and
the device route that receives state archives (checkpoints) for migrations."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from edgefleet.artifacts.blobstore import validate_sha256
from edgefleet.core.device import Device
from edgefleet.core.workloads.endpoints import Endpoint
from edgefleet.core.workloads.failure_detector import phi
from edgefleet.core.workloads.migration import Migration
from edgefleet.core.workloads.move import MOVES_KEPT_PER_WORKLOAD, PlacementMove
from edgefleet.core.workloads.placement import Explanation
from edgefleet.core.workloads.placement_record import decision_to_dict
from edgefleet.core.workloads.record import WorkloadRecord
from edgefleet.errors import InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.security.sealed_stream import SEALED_ARCHIVE_CONTENT_TYPE
from edgefleet.server.auth import (
    DeviceUpload,
    Services,
    device_or_operator,
    requires,
    services,
    signed_device_upload,
)
from edgefleet.server.schemas.workloads import ApplyWorkloadRequest, MigrateRequest
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.workloads import ServiceEndpoints, WorkloadStatus

router = APIRouter(prefix="/v1", tags=["workloads"])
_DEVICE_ID_RE = re.compile(r"\bd-[a-z2-7]{20}\b")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _record_out(record: WorkloadRecord) -> dict[str, Any]:
    spec = record.spec
    return {
        "name": record.name,
        "replicas": spec.replicas,
        "priority": spec.priority,
        "stateful": spec.stateful,
        "releases": [str(r) for r in record.releases],
        "document": dict(record.document),
        "created_by": record.created_by,
        "created_at": _iso(record.created_at),
        "updated_by": record.updated_by,
        "updated_at": _iso(record.updated_at),
        "version": record.version,
    }


def humanized(text: str, names: Mapping[str, str]) -> str:
    """Free text with device ids replaced by device names (reasons are for people)."""
    return _DEVICE_ID_RE.sub(lambda m: names.get(m.group(0), m.group(0)), text)


def migration_out(m: Migration, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    names = names or {}
    return {
        "id": m.id,
        "workload": m.workload,
        "replica": m.replica,
        "source": m.source,
        "source_name": names.get(m.source),
        "target": m.target,
        "target_name": names.get(m.target),
        "trigger": m.trigger.value,
        "reason": humanized(m.reason, names),
        "state": m.state.value,
        "weight_pct": m.weight_pct,
        "stateful": m.stateful,
        "generation": m.generation,
        "checkpoint": None if m.checkpoint_sha256 is None else {
            "sha256": m.checkpoint_sha256, "size_bytes": m.checkpoint_size_bytes},
        "steps": [{"state": s.state.value, "weight_pct": s.weight_pct, "at": _iso(s.at),
                   "detail": humanized(s.detail, names)} for s in m.steps],
        "created_by": m.created_by,
        "created_at": _iso(m.created_at),
    }  # fmt: skip


def move_out(m: PlacementMove, names: Mapping[str, str]) -> dict[str, Any]:
    return {
        "replica": m.replica,
        "from": m.from_node_id,
        "from_name": None if m.from_node_id is None else names.get(m.from_node_id),
        "to": m.to_node_id,
        "to_name": names.get(m.to_node_id),
        "kind": m.kind.value,
        "reason": humanized(m.reason, names),
        "generation": m.generation,
        "at": _iso(m.at),
    }


def _status_out(status: WorkloadStatus) -> dict[str, Any]:
    names = dict(status.names)
    placed = []
    for r in status.replicas:
        report = dict(r.report or {})
        decision = dict(r.decision or {})
        last_move = decision.get("last_move")
        if last_move:
            last_move = {**last_move, "reason": humanized(last_move["reason"], names)}
        placed.append({
            "replica": r.replica,
            "node_id": r.node_id,
            "node": r.node_name,
            "generation": r.generation,
            "liveness": None if r.liveness is None else r.liveness.value,
            "action": decision.get("action"),
            "reason": humanized(decision.get("reason", ""), names),
            "last_move": last_move,
            "state": report.get("state") if report.get("generation") == r.generation else None,
            "health": report.get("health") if report.get("generation") == r.generation else None,
            "restarts": report.get("restarts"),
            "port": report.get("port"),
            "address": r.address,
            "detail": report.get("detail", ""),
        })  # fmt: skip
    return {
        **_record_out(status.record),
        "placement": placed,
        "migrations": [migration_out(m, names) for m in status.migrations],
    }


def _endpoints_out(found: ServiceEndpoints) -> dict[str, Any]:
    def one(e: Endpoint) -> dict[str, Any]:
        return {
            "replica": e.replica,
            "node_id": e.node_id,
            "node": found.names.get(e.node_id),
            "address": e.address,
            "port": e.port,
            "url": e.url,
            "weight": e.weight,
            "role": e.role.value,
            "healthy": e.healthy,
            "migration": e.migration,
        }

    return {"service": found.service, "endpoints": [one(e) for e in found.endpoints]}


def _explanation_out(result: Explanation, names: dict[str, str]) -> dict[str, Any]:
    rounds = []
    decisions = []
    for d in result.decisions:
        out = decision_to_dict(d)
        out["reason"] = humanized(out["reason"], names)
        decisions.append(out)
    for candidates in result.candidates:
        chosen = next((c.outcome for c in candidates if c.outcome.startswith("chosen")), "")
        rows = []
        for c in candidates:
            terms = None if c.terms is None else {
                k: round(v, 4) for k, v in vars(c.terms).items()}  # fmt: skip
            rows.append({
                "node_id": c.node_id, "node": names.get(c.node_id), "excluded_by": c.excluded_by,
                "terms": terms, "total": None if c.terms is None else round(c.terms.total, 4),
                "outcome": humanized(c.outcome, names),
            })  # fmt: skip
        replica = int(chosen.rsplit(" ", 1)[1]) if chosen else None
        rounds.append({"replica": replica, "candidates": rows})
    return {
        "workload": result.workload,
        "decisions": decisions,
        "replicas": rounds,
    }


@router.put("/workloads/{name}", summary="Create or update a workload from its manifest")
def apply_workload(
    name: str,
    body: ApplyWorkloadRequest,
    response: Response,
    dry_run: bool = Query(False, description="Decide everything, store nothing"),
    ctx: OperatorContext = Depends(requires(Permission.WORKLOADS_WRITE)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    meta = body.document.get("metadata")
    given = meta.get("name") if "spec" in body.document and isinstance(meta, dict) \
        else body.document.get("name")  # fmt: skip
    if given != name:
        raise InvalidInput(f"the manifest names workload {given!r}, the path {name!r}")
    record, outcome = svc.workloads.apply(ctx, body.document, dry_run=dry_run)
    response.status_code = 201 if outcome == "created" and not dry_run else 200
    return {**_record_out(record), "outcome": outcome, "dry_run": dry_run}


@router.get("/workloads", summary="List workloads with where their replicas run")
def list_workloads(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    return [_status_out(s) for s in svc.workloads.list_workloads(ctx)]


@router.get("/workloads/{name}", summary="Show a workload: spec, placement, status")
def show_workload(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    return _status_out(svc.workloads.get(ctx, name))


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
) -> dict[str, Any]:
    migration = svc.workloads.migrate(ctx, name, body.replica, body.to, body.selector)
    return migration_out(migration, svc.workloads.device_names())


@router.post(
    "/workloads/{name}/migrations/abort",
    summary="Abort the workload's migrations: replicas return to their sources",
)
def abort_migrations(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.WORKLOADS_WRITE)),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    aborted = svc.workloads.abort(ctx, name)
    names = svc.workloads.device_names()
    return [migration_out(m, names) for m in aborted]


@router.get("/workloads/{name}/migrations", summary="The workload's migrations, newest first")
def list_migrations(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    found, names = svc.workloads.migrations(ctx, name)
    return [migration_out(m, names) for m in found]


@router.get("/workloads/{name}/moves", summary="The workload's replica moves, newest first")
def list_moves(
    name: str,
    limit: int = Query(MOVES_KEPT_PER_WORKLOAD, ge=1, le=MOVES_KEPT_PER_WORKLOAD),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    found, names = svc.workloads.moves(ctx, name, limit)
    return [move_out(m, names) for m in found]


@router.get("/placements/{name}", summary="Where each replica is placed, and why")
def show_placement(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    status = svc.workloads.get(ctx, name)
    out = _status_out(status)
    return {"workload": name, "placement": out["placement"], "migrations": out["migrations"]}


@router.get(
    "/placements/{name}/explain",
    summary="Each candidate node's score terms, or why it was excluded",
)
def explain_placement(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    result, names = svc.workloads.explain(ctx, name)
    return _explanation_out(result, names)


@router.get("/nodes", summary="Nodes as the workload controllers see them")
def list_nodes(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    now = svc.workloads.now()
    out = []
    for v in svc.workloads.nodes(ctx):
        n, h = v.node, v.health
        out.append({
            "id": v.device_id, "name": v.name, "region": n.region, "zone": n.zone,
            "residency": n.residency, "liveness": h.state.value,
            "liveness_since": _iso(h.liveness.since),
            "phi": round(max(0.0, min(phi(h.liveness.history, now), 1e9)), 3),
            "reliability": round(h.liveness.reliability(now), 4),
            "last_heartbeat_at": _iso(h.liveness.history.last_heartbeat_at),
            "heartbeats_seen": len(h.liveness.history.intervals_us),
            "cpu_millicores": n.cpu_millicores, "memory_mb": n.memory_mb,
            "power_source": n.power_source.value, "battery_pct": n.battery_pct,
            "draining": h.drain.draining, "drain_reason": h.drain.reason,
            "address": h.address, "replicas": v.replicas,
        })  # fmt: skip
    return out


@router.get(
    "/services/{name}/endpoints",
    summary="A workload's service endpoints with traffic weights (clients follow them)",
)
def service_endpoints(
    name: str,
    _who: Device | OperatorContext = Depends(device_or_operator),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    return _endpoints_out(svc.workloads.endpoints(name))


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
) -> dict[str, Any]:
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
    return {"sha256": info.sha256, "size_bytes": info.size_bytes}
