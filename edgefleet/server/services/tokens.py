"""Token service: operators' API tokens (roles) and devices' enrollment tokens.

Minted tokens are found by their SHA-256; the admin token a person chose is stored salted
(`security/tokens.py` says why) and checked only when no SHA-256 matches, one such check at
a time: a flood of unknown tokens costs at most one scrypt at once instead of every request
thread (a different token meanwhile is told to retry, 503 `auth_busy`; the same one waits
for that check's answer, so an admin's concurrent first requests all succeed). A chosen
secret that verified is remembered by its SHA-256 in this process's memory (not in the
database), so its later requests cost one lookup too.

Data dirs of earlier versions hold the admin token as unsalted SHA-256; it is salted at the
next start with EDGEFLEET_ADMIN_TOKEN set, or at its next successful use.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from datetime import datetime, timedelta

from edgefleet.clock import Clock
from edgefleet.core.enrollment import EnrollmentToken
from edgefleet.core.governance.scope import group_of_scope
from edgefleet.core.selector import Selector, parse_selector
from edgefleet.errors import InvalidInput, NotFound, Unauthenticated, Unavailable
from edgefleet.security.rbac import SYSTEM, Permission, Principal, Role, role_named
from edgefleet.security.tokens import (
    API_TOKEN_PREFIX,
    ENROLLMENT_TOKEN_PREFIX,
    ApiToken,
    hash_chosen_secret,
    hash_secret,
    is_minted_secret,
    new_id,
    new_secret,
    verify_chosen_secret,
)
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.roles import require_role, resolve_permissions
from edgefleet.store import Database

log = logging.getLogger(__name__)

# Writing last_used_at on every request would turn reads into writes; once a minute is enough.
_LAST_USED_RESOLUTION = timedelta(minutes=1)
BOOTSTRAP_TOKEN_NAME = "bootstrap-admin"


class TokenService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._checks_lock = threading.Lock()
        self._checks: dict[str, Future[ApiToken | None]] = {}  # by SHA-256: at most one
        self._verified: dict[str, str] = {}  # SHA-256 of a chosen secret -> its token id

    def bootstrap_admin(self, secret: str, request_id: str) -> ApiToken | None:
        """Install `secret` as an admin token when the data dir has no token at all; salt
        its stored hash when an earlier version stored it unsalted."""
        if len(secret) < 16:
            raise InvalidInput("EDGEFLEET_ADMIN_TOKEN must be at least 16 characters")
        now = self._clock.now()
        digest = hash_secret(secret)
        with self._db.read() as tx:
            if tx.api_tokens.count() > 0 and tx.api_tokens.find_by_hash(digest) is None:
                return None  # the usual restart: nothing to do, and no slow hash to compute
        salted = hash_chosen_secret(secret)  # slow: not inside the write transaction
        with self._db.transaction() as tx:
            if tx.api_tokens.count() > 0:
                legacy = tx.api_tokens.find_by_hash(digest)
                if legacy is not None:
                    tx.api_tokens.set_secret_hash(legacy.id, salted)
                    log.info("stored the admin token's hash salted", extra={"token_id": legacy.id})
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
            tx.api_tokens.insert(token, salted)
            ctx = OperatorContext(SYSTEM, request_id)
            record_action(
                tx,
                ctx,
                "api-token.create",
                f"api-token/{token.id}",
                now,
                {"name": token.name, "role": str(token.role)},
            )
            return token

    def authenticate(self, secret: str) -> Principal:
        """The principal behind a bearer secret, or Unauthenticated with the reason."""
        now = self._clock.now()
        digest = hash_secret(secret)
        with self._db.read() as tx:
            token = tx.api_tokens.find_by_hash(digest)
            unsalted = token is not None and not is_minted_secret(secret)
            if token is None and digest in self._verified:
                token = tx.api_tokens.get(self._verified[digest])
        if token is None:
            token = self._check_chosen(secret, digest)
        elif unsalted:  # a chosen secret stored by an earlier version
            self._salt(token, secret)
        if token is None:
            raise Unauthenticated("invalid API token", code="invalid_token")
        if token.revoked:
            raise Unauthenticated(f"API token {token.id} was revoked", code="token_revoked")
        if token.expires_at is not None and now >= token.expires_at:
            raise Unauthenticated(f"API token {token.id} has expired", code="token_expired")
        if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
            with self._db.transaction() as tx:
                tx.api_tokens.mark_used(token.id, now)
        scope = None if token.scope is None else self._resolve_scope(token.scope, token.id)
        with self._db.read() as tx:  # a custom role's permissions as they are now
            permissions = resolve_permissions(tx, token.role)
        if permissions is None:
            raise Unauthenticated(f"API token {token.id} holds role {token.role!r}, which no "
                                  "longer exists", code="role_missing")  # fmt: skip
        return Principal(token_id=token.id, name=token.name, role=token.role, scope=scope,
                         permissions=permissions)  # fmt: skip

    def _resolve_scope(self, scope: str, token_id: str | None = None) -> Selector:
        """The selector of a stored or requested scope: a label selector, or `group:NAME`,
        the group's selector as it is now (a token whose group was deleted is refused)."""
        group = group_of_scope(scope)
        if group is None:
            return parse_selector(scope)
        with self._db.read() as tx:
            found = tx.groups.find(group)
        if found is None and token_id is not None:
            raise Unauthenticated(f"API token {token_id} is scoped to group {group}, which no "
                                  "longer exists", code="scope_group_missing")  # fmt: skip
        if found is None:
            raise NotFound(f"no group named {group!r}", code="group_not_found")
        return parse_selector(found.selector)

    def _check_chosen(self, secret: str, digest: str) -> ApiToken | None:
        """The token whose chosen secret this is, checked against each salted hash."""
        with self._db.read() as tx:
            candidates = tx.api_tokens.with_chosen_secrets()
        if not candidates:
            return None
        with self._checks_lock:
            check = self._checks.get(digest)
            running = check is not None
            if check is None:
                if self._checks:
                    raise Unavailable("another unknown API token is being checked; retry in "
                                      "a moment", code="auth_busy")  # fmt: skip
                check = self._checks[digest] = Future()
        if running:  # the same secret, being checked for a concurrent request
            return check.result()
        try:
            found = next((t for t, stored in candidates if verify_chosen_secret(secret, stored)),
                         None)  # fmt: skip
            if found is not None:
                self._verified[digest] = found.id
            check.set_result(found)
            return found
        except BaseException as e:
            check.set_exception(e)
            raise
        finally:
            with self._checks_lock:
                del self._checks[digest]

    def _salt(self, token: ApiToken, secret: str) -> None:
        salted = hash_chosen_secret(secret)
        with self._db.transaction() as tx:
            tx.api_tokens.set_secret_hash(token.id, salted)
        self._verified[hash_secret(secret)] = token.id
        log.info("stored the admin token's hash salted", extra={"token_id": token.id})

    def create_api_token(
        self,
        ctx: OperatorContext,
        name: str,
        role: str,
        expires_in: timedelta | None,
        *,
        scope: str | None = None,
    ) -> tuple[ApiToken, str]:
        """A new token holding `role` (built-in or custom), its changes to devices limited to
        the label selector `scope` (None: the whole fleet; a scoped minter can only mint
        within its scope)."""
        ctx.require(Permission.API_TOKENS_WRITE)
        with self._db.read() as tx:
            require_role(tx, role)
        role = role_named(role)
        parsed = None if scope is None else self._resolve_scope(scope)
        ctx.principal.require_scope(parsed)
        if scope is not None and group_of_scope(scope) is None:
            scope = str(parsed)
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
            scope=scope,
        )
        with self._db.transaction() as tx:
            tx.api_tokens.insert(token, hash_secret(secret))
            record_action(
                tx,
                ctx,
                "api-token.create",
                f"api-token/{token.id}",
                now,
                {"name": name, "role": str(role), "scope": token.scope},
            )
        return token, secret

    def list_api_tokens(self, ctx: OperatorContext) -> list[ApiToken]:
        ctx.require(Permission.API_TOKENS_READ)
        with self._db.read() as tx:
            return tx.api_tokens.all()

    def revoke_api_token(self, ctx: OperatorContext, id_or_name: str) -> ApiToken:
        """Revoke a token by id, or by name when one token that is not revoked has it."""
        ctx.require(Permission.API_TOKENS_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            token_id = tx.api_tokens.resolve(id_or_name).id
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
        if auto_approve:  # devices choose their own labels when they enroll
            ctx.principal.require_fleet_wide("create auto-approving enrollment tokens")
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
                tx,
                ctx,
                "enrollment-token.create",
                f"enrollment-token/{token.id}",
                now,
                {
                    "auto_approve": auto_approve,
                    "max_uses": max_uses,
                    "expires_at": _iso(token.expires_at),
                },
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
