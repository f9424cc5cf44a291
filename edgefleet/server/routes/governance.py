"""Operator API for governance: Policy documents, `policy test`, custom roles (admin), and
the changes waiting for a second operator's approval."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.base import DeletedOut
from edgefleet.server.schemas.governance import (
    AppliedPolicyOut,
    AppliedRoleOut,
    ApprovedChangeOut,
    ChangeOut,
    ManifestRequest,
    PolicyOut,
    PolicyTestOut,
    RoleOut,
)
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.roles import role_view

router = APIRouter(prefix="/v1", tags=["governance"])


@router.put("/policies", summary="Create or update a policy from its manifest (admin)")
def apply_policy(
    body: ManifestRequest,
    dry_run: bool = Query(False, description="Validate and decide, store nothing"),
    ctx: OperatorContext = Depends(requires(Permission.POLICIES_WRITE)),
    svc: Services = Depends(services),
) -> AppliedPolicyOut:
    stored, outcome = svc.policies.apply(ctx, body.manifest, dry_run=dry_run)
    return AppliedPolicyOut(outcome=outcome, dry_run=dry_run, policy=PolicyOut.of(stored))


@router.get("/policies", summary="The policies in force")
def list_policies(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[PolicyOut]:
    return [PolicyOut.of(p) for p in svc.policies.list_policies(ctx)]


@router.delete("/policies/{name}", summary="Delete a policy (admin)")
def delete_policy(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.POLICIES_WRITE)),
    svc: Services = Depends(services),
) -> DeletedOut:
    svc.policies.delete(ctx, name)
    return DeletedOut(deleted=name)


@router.post(
    "/policies/test",
    summary="Evaluate a Rollout or Workload manifest against the policies, applying nothing",
)
def test_policies(
    body: ManifestRequest,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> PolicyTestOut:
    return PolicyTestOut.model_validate(svc.policies.test(ctx, body.manifest))


@router.put("/roles", summary="Create or update a custom role from its manifest (admin)")
def apply_role(
    body: ManifestRequest,
    dry_run: bool = Query(False, description="Validate and decide, store nothing"),
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_WRITE)),
    svc: Services = Depends(services),
) -> AppliedRoleOut:
    stored, outcome = svc.roles.apply(ctx, body.manifest, dry_run=dry_run)
    role = RoleOut.model_validate(role_view(stored))
    return AppliedRoleOut(outcome=outcome, dry_run=dry_run, role=role)


@router.get("/roles", summary="Built-in and custom roles with their permissions (admin)")
def list_roles(
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_READ)),
    svc: Services = Depends(services),
) -> list[RoleOut]:
    return [RoleOut.model_validate(r) for r in svc.roles.list_roles(ctx)]


@router.get("/roles/{name}", summary="A role's permissions and the tokens holding it (admin)")
def show_role(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_READ)),
    svc: Services = Depends(services),
) -> RoleOut:
    return RoleOut.model_validate(svc.roles.show(ctx, name))


@router.delete("/roles/{name}", summary="Delete a custom role no live token holds (admin)")
def delete_role(
    name: str,
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_WRITE)),
    svc: Services = Depends(services),
) -> DeletedOut:
    svc.roles.delete(ctx, name)
    return DeletedOut(deleted=name)


@router.get("/changes", summary="Changes waiting for (or given) a second approval")
def list_changes(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[ChangeOut]:
    return [ChangeOut.of(c) for c in svc.approvals.list_changes(ctx)]


@router.post("/changes/{change_id}/approve", summary="Approve another admin's trust change")
def approve_change(
    change_id: str,
    ctx: OperatorContext = Depends(requires(Permission.TRUST_ADMIN)),
    svc: Services = Depends(services),
) -> ApprovedChangeOut:
    change, version = svc.approvals.approve(ctx, change_id)
    return ApprovedChangeOut(**ChangeOut.fields_of(change), root_version=version)
