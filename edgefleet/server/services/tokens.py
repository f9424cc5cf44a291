"""Token service: operators' API tokens (roles) and devices' enrollment tokens."""

from __future__ import annotations

from datetime import datetime, timedelta

from edgefleet.clock import Clock
from edgefleet.core.enrollment import EnrollmentToken
from edgefleet.errors import InvalidInput, Unauthenticated
from edgefleet.security.rbac import SYSTEM, Permission, Principal, Role
from edgefleet.security.tokens import (
    API_TOKEN_PREFIX,
    ENROLLMENT_TOKEN_PREFIX,
    ApiToken,
    hash_secret,
    new_id,
    new_secret,
)
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.store import Database

# Writing last_used_at on every request would turn reads into writes; once a minute is enough.
_LAST_USED_RESOLUTION = timedelta(minutes=1)
BOOTSTRAP_TOKEN_NAME = "bootstrap-admin"


class TokenService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def bootstrap_admin(self, secret: str, request_id: str) -> ApiToken | None:
        """Install `secret` as an admin token when the data dir has no token at all."""
        if len(secret) < 16:
            raise InvalidInput("EDGEFLEET_ADMIN_TOKEN must be at least 16 characters")
        now = self._clock.now()
        with self._db.transaction() as tx:
            if tx.api_tokens.count() > 0:
                return None
            token = ApiToken(
                id=new_id("tok"),
                name=BOOTSTRAP_TOKEN_NAME,
                role=Role.ADMIN,
                created_by=SYSTEM.actor,
                created_at=now,
                expires_at=None,
                revoked=False,
            )
            tx.api_tokens.insert(token, hash_secret(secret))
            ctx = OperatorContext(SYSTEM, request_id)
            record_action(tx, ctx, "api-token.create", f"api-token/{token.id}", now,
                          {"name": token.name, "role": token.role.value})
            return token

    def authenticate(self, secret: str) -> Principal:
        """The principal behind a bearer secret, or Unauthenticated with the reason."""
        now = self._clock.now()
        with self._db.read() as tx:
            token = tx.api_tokens.find_by_hash(hash_secret(secret))
        if token is None:
            raise Unauthenticated("invalid API token", code="invalid_token")
        if token.revoked:
            raise Unauthenticated(f"API token {token.id} was revoked", code="token_revoked")
        if token.expires_at is not None and now >= token.expires_at:
            raise Unauthenticated(f"API token {token.id} has expired", code="token_expired")
        if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
            with self._db.transaction() as tx:
                tx.api_tokens.mark_used(token.id, now)
        return Principal(token_id=token.id, name=token.name, role=token.role)

    def create_api_token(
        self, ctx: OperatorContext, name: str, role: Role, expires_in: timedelta | None
    ) -> tuple[ApiToken, str]:
        ctx.require(Permission.API_TOKENS_WRITE)
        now = self._clock.now()
        secret = new_secret(API_TOKEN_PREFIX)
        token = ApiToken(
            id=new_id("tok"),
            name=name,
            role=role,
            created_by=ctx.principal.actor,
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
            revoked=False,
        )
        with self._db.transaction() as tx:
            tx.api_tokens.insert(token, hash_secret(secret))
            record_action(tx, ctx, "api-token.create", f"api-token/{token.id}", now,
                          {"name": name, "role": role.value})
        return token, secret

    def list_api_tokens(self, ctx: OperatorContext) -> list[ApiToken]:
        ctx.require(Permission.API_TOKENS_READ)
        with self._db.read() as tx:
            return tx.api_tokens.all()

    def revoke_api_token(self, ctx: OperatorContext, token_id: str) -> ApiToken:
        ctx.require(Permission.API_TOKENS_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            tx.api_tokens.revoke(token_id)
            record_action(tx, ctx, "api-token.revoke", f"api-token/{token_id}", now)
            return tx.api_tokens.get(token_id)

    def create_enrollment_token(
        self,
        ctx: OperatorContext,
        description: str,
        auto_approve: bool,
        expires_in: timedelta | None,
        max_uses: int | None,
    ) -> tuple[EnrollmentToken, str]:
        ctx.require(Permission.ENROLLMENT_TOKENS_WRITE)
        now = self._clock.now()
        secret = new_secret(ENROLLMENT_TOKEN_PREFIX)
        token = EnrollmentToken(
            id=new_id("enr"),
            description=description,
            auto_approve=auto_approve,
            expires_at=now + expires_in if expires_in else None,
            max_uses=max_uses,
            uses=0,
            revoked=False,
            created_by=ctx.principal.actor,
            created_at=now,
        )
        with self._db.transaction() as tx:
            tx.enrollment_tokens.insert(token, hash_secret(secret))
            record_action(
                tx, ctx, "enrollment-token.create", f"enrollment-token/{token.id}", now,
                {"auto_approve": auto_approve, "max_uses": max_uses,
                 "expires_at": _iso(token.expires_at)},
            )
        return token, secret

    def list_enrollment_tokens(self, ctx: OperatorContext) -> list[EnrollmentToken]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.enrollment_tokens.all()

    def revoke_enrollment_token(self, ctx: OperatorContext, token_id: str) -> EnrollmentToken:
        ctx.require(Permission.ENROLLMENT_TOKENS_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            tx.enrollment_tokens.revoke(token_id)
            record_action(tx, ctx, "enrollment-token.revoke", f"enrollment-token/{token_id}", now)
            return tx.enrollment_tokens.get(token_id)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
