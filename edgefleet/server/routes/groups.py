"""Operator API for groups (named label selectors)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.groups import CreateGroupRequest, GroupOut
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1/groups", tags=["groups"])


@router.post("", status_code=201, summary="Create a group")
def create_group(
    body: CreateGroupRequest,
    ctx: OperatorContext = Depends(requires(Permission.GROUPS_WRITE)),
    svc: Services = Depends(services),
) -> GroupOut:
    return GroupOut.of(svc.devices.create_group(ctx, body.name, body.selector, body.description))


@router.get("", summary="List groups", response_model=list[GroupOut])
def list_groups(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[GroupOut]:
    return [GroupOut.of(g) for g in svc.devices.list_groups(ctx)]


@router.get("/{name}", summary="Show a group and the devices it matches now")
def show_group(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> GroupOut:
    group, members = svc.devices.get_group(ctx, name)
    return GroupOut.of(group, [d.id for d in members])


@router.delete("/{name}", status_code=204, summary="Delete a group")
def delete_group(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.GROUPS_WRITE)),
    svc: Services = Depends(services),
) -> Response:
    svc.devices.delete_group(ctx, name)
    return Response(status_code=204)
