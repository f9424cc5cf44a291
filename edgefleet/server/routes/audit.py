"""Operator API for the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.audit import AuditRecordOut
from edgefleet.server.schemas.base import SQL_INTEGER_MAX
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get(
    "",
    summary="Audit records in sequence order (page with `after`), or the newest `tail`",
    response_model=list[AuditRecordOut],
)
def list_audit(
    after: int = Query(
        0, ge=0, le=SQL_INTEGER_MAX, description="Return records with seq greater than this"
    ),
    limit: int = Query(100, ge=1, le=1000),
    tail: int | None = Query(None, ge=1, le=1000, description="The newest N records instead"),
    ctx: OperatorContext = Depends(requires(Permission.AUDIT_READ)),
    svc: Services = Depends(services),
) -> list[AuditRecordOut]:
    records = svc.audit.latest(ctx, tail) if tail else svc.audit.page(ctx, after, limit)
    return [AuditRecordOut.of(r) for r in records]
