"""TUF metadata: served to devices, and the root managed by admins."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Response

from edgefleet.core.device import Device
from edgefleet.errors import InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import device_or_operator, requires
from edgefleet.server.composition import Services, services
from edgefleet.server.routes.typed_response import typed_response
from edgefleet.server.schemas.governance import ChangeOut
from edgefleet.server.schemas.trust import (
    OnlineKeysOut,
    PendingRootChangeOut,
    RootVersionOut,
    SetRootRequest,
    TrustStatusOut,
)
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1", tags=["trust (TUF)"])


@router.get(
    "/trust",
    summary="Trust status: root version, roles, thresholds, targets",
    response_model_exclude_unset=True,
)
def trust_status(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> TrustStatusOut:
    return TrustStatusOut.model_validate(svc.trust.status(ctx))


@router.get("/trust/online-keys", summary="The server's snapshot and timestamp public keys")
def online_keys(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> OnlineKeysOut:
    return OnlineKeysOut.model_validate(svc.trust.online_keys(ctx))


@router.post("/trust/root", status_code=201, summary="Install the first root (admin)")
def initialize_root(
    body: SetRootRequest,
    ctx: OperatorContext = Depends(requires(Permission.TRUST_ADMIN)),
    svc: Services = Depends(services),
) -> RootVersionOut:
    if body.targets is not None:
        raise InvalidInput("targets are only sent with a root rotation")
    return RootVersionOut(root_version=svc.trust.initialize(ctx, json.dumps(body.root).encode()))


@router.put(
    "/trust/root",
    summary="Rotate to the next root (admin)",
    response_model=RootVersionOut,
    responses={202: {"model": PendingRootChangeOut, "description": "Waiting for approval"}},
)
def rotate_root(
    body: SetRootRequest,
    ctx: OperatorContext = Depends(requires(Permission.TRUST_ADMIN)),
    svc: Services = Depends(services),
) -> Response:
    """200 with the new root version, or 202 with the pending change when a policy wants a
    second admin to approve it (POST /v1/changes/{id}/approve)."""
    targets = json.dumps(body.targets).encode() if body.targets is not None else None
    result = svc.trust.rotate_root(ctx, json.dumps(body.root).encode(), targets)
    if isinstance(result, int):
        return typed_response(RootVersionOut(root_version=result))
    return typed_response(PendingRootChangeOut(pending_change=ChangeOut.of(result)), 202)


@router.get("/tuf/{filename}", summary="TUF metadata (N.root.json, timestamp.json, ...)")
def tuf_metadata(
    filename: str,
    _who: Device | OperatorContext = Depends(device_or_operator),
    svc: Services = Depends(services),
) -> Response:
    return Response(svc.trust.metadata(filename), media_type="application/json")
