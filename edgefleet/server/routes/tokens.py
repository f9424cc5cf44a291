"""Operator API for credentials: API tokens (admin) and enrollment tokens (operator)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Response

from edgefleet.security.rbac import Permission
from edgefleet.server.auth import any_operator, requires
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.tokens import (
    ApiTokenOut,
    CreateApiTokenRequest,
    CreateEnrollmentTokenRequest,
    EnrollmentTokenOut,
    WhoAmI,
)
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1", tags=["tokens"])


# An answer carrying a new secret: no cache may keep it, and it is never compressed (a
# compressed secret beside attacker-chosen text leaks through the length: BREACH).
SECRET_HEADERS = {"cache-control": "no-store"}


def _seconds(value: float | None) -> timedelta | None:
    return timedelta(seconds=value) if value else None


@router.get("/whoami", summary="The caller's token and role")
def whoami(ctx: OperatorContext = Depends(any_operator)) -> WhoAmI:
    p = ctx.principal
    scope = None if p.scope is None else str(p.scope)
    return WhoAmI(token_id=p.token_id, name=p.name, role=p.role, scope=scope)


@router.post("/tokens", status_code=201, summary="Create an API token (admin)")
def create_api_token(
    body: CreateApiTokenRequest,
    response: Response,
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_WRITE)),
    svc: Services = Depends(services),
) -> ApiTokenOut:
    response.headers.update(SECRET_HEADERS)
    expires_in = _seconds(body.expires_in_s)
    token, secret = svc.tokens.create_api_token(
        ctx, body.name, body.role, expires_in, scope=body.scope
    )
    return ApiTokenOut.of(token, secret)


@router.get("/tokens", summary="List API tokens (admin)", response_model=list[ApiTokenOut])
def list_api_tokens(
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_READ)),
    svc: Services = Depends(services),
) -> list[ApiTokenOut]:
    return [ApiTokenOut.of(t) for t in svc.tokens.list_api_tokens(ctx)]


@router.delete("/tokens/{token_id}", summary="Revoke an API token (admin)")
def revoke_api_token(
    token_id: str,
    ctx: OperatorContext = Depends(requires(Permission.API_TOKENS_WRITE)),
    svc: Services = Depends(services),
) -> ApiTokenOut:
    return ApiTokenOut.of(svc.tokens.revoke_api_token(ctx, token_id))


@router.post("/enrollment-tokens", status_code=201, summary="Create an enrollment token")
def create_enrollment_token(
    body: CreateEnrollmentTokenRequest,
    response: Response,
    ctx: OperatorContext = Depends(requires(Permission.ENROLLMENT_TOKENS_WRITE)),
    svc: Services = Depends(services),
) -> EnrollmentTokenOut:
    response.headers.update(SECRET_HEADERS)
    token, secret = svc.tokens.create_enrollment_token(
        ctx, body.description, body.auto_approve, _seconds(body.expires_in_s), body.max_uses
    )
    return EnrollmentTokenOut.of(token, secret)


@router.get(
    "/enrollment-tokens",
    summary="List enrollment tokens",
    response_model=list[EnrollmentTokenOut],
)
def list_enrollment_tokens(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[EnrollmentTokenOut]:
    return [EnrollmentTokenOut.of(t) for t in svc.tokens.list_enrollment_tokens(ctx)]


@router.delete("/enrollment-tokens/{token_id}", summary="Revoke an enrollment token")
def revoke_enrollment_token(
    token_id: str,
    ctx: OperatorContext = Depends(requires(Permission.ENROLLMENT_TOKENS_WRITE)),
    svc: Services = Depends(services),
) -> EnrollmentTokenOut:
    return EnrollmentTokenOut.of(svc.tokens.revoke_enrollment_token(ctx, token_id))
