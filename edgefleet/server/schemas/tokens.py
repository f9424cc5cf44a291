"""HTTP wire schemas: API tokens, the caller's identity and enrollment tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from edgefleet.core.durations import MAX_DURATION
from edgefleet.core.enrollment import EnrollmentToken
from edgefleet.security.tokens import ApiToken
from edgefleet.server.schemas.base import SQL_INTEGER_MAX, Strict


class CreateApiTokenRequest(Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@-]+$")
    role: str = Field(
        min_length=1, max_length=64,
        description="A built-in role (viewer, operator, admin, rollout-approver, "
                    "release-signer) or a custom role's name (`kind: Role`).",
    )  # fmt: skip
    expires_in_s: float | None = Field(None, gt=0, le=MAX_DURATION.total_seconds())
    scope: str | None = Field(
        None, max_length=4096,
        description="A label selector the token's changes to devices are limited to "
                    "(docs/operator-guide.md, Governance); none: the whole fleet.",
    )  # fmt: skip


class ApiTokenOut(BaseModel):
    id: str
    name: str
    role: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None
    scope: str | None = None
    token: str | None = Field(None, description="The secret; shown once, at creation.")

    @classmethod
    def of(cls, token: ApiToken, secret: str | None = None) -> ApiTokenOut:
        return cls(
            id=token.id,
            name=token.name,
            role=token.role,
            created_by=token.created_by,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked=token.revoked,
            last_used_at=token.last_used_at,
            scope=token.scope,
            token=secret,
        )


class WhoAmI(BaseModel):
    token_id: str
    name: str
    role: str
    scope: str | None = None


class CreateEnrollmentTokenRequest(Strict):
    description: str = Field("", max_length=256)
    auto_approve: bool = False
    expires_in_s: float | None = Field(None, gt=0, le=MAX_DURATION.total_seconds())
    max_uses: int | None = Field(None, ge=1, le=SQL_INTEGER_MAX)


class EnrollmentTokenOut(BaseModel):
    id: str
    description: str
    auto_approve: bool
    expires_at: datetime | None
    max_uses: int | None
    uses: int
    revoked: bool
    created_by: str
    created_at: datetime
    token: str | None = Field(None, description="The secret; shown once, at creation.")

    @classmethod
    def of(cls, token: EnrollmentToken, secret: str | None = None) -> EnrollmentTokenOut:
        return cls(
            id=token.id,
            description=token.description,
            auto_approve=token.auto_approve,
            expires_at=token.expires_at,
            max_uses=token.max_uses,
            uses=token.uses,
            revoked=token.revoked,
            created_by=token.created_by,
            created_at=token.created_at,
            token=secret,
        )
