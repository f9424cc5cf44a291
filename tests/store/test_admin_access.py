"""What start-up says about admin access, over each backend, and the local bootstrap."""

from __future__ import annotations

from datetime import timedelta

from edgefleet.clock import SystemClock
from edgefleet.security.rbac import Principal, Role
from edgefleet.server.services.admin_access import AdminAccess, AdminTokenState
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.tokens import TokenService
from edgefleet.store import Database

CHOSEN = "an admin token a person chose"


def _access(db: Database) -> tuple[AdminAccess, TokenService]:
    tokens = TokenService(db, SystemClock())
    return AdminAccess(db, tokens, SystemClock()), tokens


def test_each_start_says_what_the_admin_token_is_to_the_data_dir(db: Database) -> None:
    access, tokens = _access(db)
    assert access.check_at_start(None).state is AdminTokenState.NO_ADMIN
    created = access.check_at_start(CHOSEN)
    assert created.state is AdminTokenState.CREATED
    assert access.check_at_start(CHOSEN).state is AdminTokenState.IN_USE
    assert access.check_at_start(None).state is AdminTokenState.ADMIN_EXISTS
    other = access.check_at_start(CHOSEN + " changed")
    assert other.state is AdminTokenState.IGNORED and "none of them" in other.reason

    admin = OperatorContext(Principal(created.token_id or "", "admin", Role.ADMIN), "req-1")
    tokens.revoke_api_token(admin, created.token_id or "")
    revoked = access.check_at_start(CHOSEN)
    assert revoked.state is AdminTokenState.IGNORED and "revoked" in revoked.reason
    nobody = access.check_at_start(None)
    assert nobody.state is AdminTokenState.NO_ADMIN and "revoked or expired" in nobody.reason


def test_a_local_bootstrap_token_is_an_audited_admin(db: Database) -> None:
    access, tokens = _access(db)
    token, secret = access.mint_local_admin("rescue", timedelta(hours=1))
    principal = tokens.authenticate(secret)
    assert (principal.role, principal.name) == (Role.ADMIN, "rescue")
    assert token.expires_at is not None and token.created_by == "local-bootstrap"
    with db.read() as tx:
        [record] = tx.audit.latest(1)
    assert (record.actor, record.action) == ("local-bootstrap", "api-token.create")
    assert access.check_at_start(None).state is AdminTokenState.ADMIN_EXISTS
