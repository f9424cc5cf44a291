"""Operator API for governance: Policy documents, `policy test`, custom roles (admin), and
the changes waiting for a second operator's approval."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from edgefleet.security.rbac import Permission
from edgefleet.server.auth import Services, requires, services
from edgefleet.server.schemas.governance import ManifestRequest
from edgefleet.server.services.approvals import change_view
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.policies import stored_view
from edgefleet.server.services.roles import role_view

router = APIRouter(prefix="/v1", tags=["governance"])


@router.put("/policies", summary="Create or update a policy from its manifest (admin)")
def apply_policy(
    body: ManifestRequest,
    dry_run: bool = Query(False, description="Validate and decide, store nothing"),
    ctx: OperatorContext = Depends(requires(Permission.POLICIES_WRITE)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    stored, outcome = svc.policies.apply(ctx, body.manifest, dry_run=dry_run)
    return {"outcome": outcome, "dry_run": dry_run, "policy": stored_view(stored)}


@router.get("/policies", summary="The policies in force")
def list_policies(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    return [stored_view(p) for p in svc.policies.list_policies(ctx)]


@router.delete("/policies/{name}", summary="Delete a policy (admin)")
def delete_policy(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.POLICIES_WRITE)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    svc.policies.delete(ctx, name)
    return {"deleted": name}


@router.post(
    "/policies/test",
    summary="Evaluate a Rollout or Workload manifest against the policies, applying nothing",
)
def test_policies(
    body: ManifestRequest,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    return svc.policies.test(ctx, body.manifest)


@router.put("/roles", summary="Create or update a custom role from its manifest (admin)")
def apply_role(
    body: ManifestRequest,
    dry_run: bool = Query(False, description="Validate and decide, store nothing"),
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_WRITE)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    stored, outcome = svc.roles.apply(ctx, body.manifest, dry_run=dry_run)
    return {"outcome": outcome, "dry_run": dry_run, "role": role_view(stored)}


@router.get("/roles", summary="Built-in and custom roles with their permissions (admin)")
def list_roles(
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_READ)),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    return svc.roles.list_roles(ctx)


@router.get("/roles/{name}", summary="A role's permissions and the tokens holding it (admin)")
def show_role(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_READ)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    return svc.roles.show(ctx, name)


@router.delete("/roles/{name}", summary="Delete a custom role no live token holds (admin)")
def delete_role(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_WRITE)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    svc.roles.delete(ctx, name)
    return {"deleted": name}


@router.get("/changes", summary="Changes waiting for (or given) a second approval")
def list_changes(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[dict[str, Any]]:
    return [change_view(c) for c in svc.approvals.list_changes(ctx)]


@router.post("/changes/{change_id}/approve", summary="Approve another admin's trust change")
def approve_change(
    change_id: str,
    ctx: OperatorContext = Depends(requires(Permission.TRUST_ADMIN)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    change, version = svc.approvals.approve(ctx, change_id)
    return {**change_view(change), "root_version": version}
