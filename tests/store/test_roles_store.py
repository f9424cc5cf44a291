"""Custom roles in the store, on every backend: a role round-trips, API tokens hold a role
name as long as any role may have, and the tokens holding a role are the ones not revoked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edgefleet.errors import NotFound
from edgefleet.security.rbac import Role
from edgefleet.security.tokens import ApiToken
from edgefleet.store import Database
from edgefleet.store.repositories.roles import StoredRole

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LONG_NAME = "r" * 64


def token(token_id: str, role: str, revoked: bool = False) -> ApiToken:
    return ApiToken(id=token_id, name=token_id, role=role, created_by="admin", created_at=T0,
                    expires_at=None, revoked=revoked)  # fmt: skip


def test_a_role_round_trips_and_is_held_by_tokens_not_revoked(db: Database) -> None:
    role = StoredRole(LONG_NAME, frozenset({"fleet.read", "rollouts.write"}), "ci", "admin", T0)
    with db.transaction() as tx:
        tx.roles.put(role)
        tx.api_tokens.insert(token("tok-1", LONG_NAME), "h1")
        tx.api_tokens.insert(token("tok-2", LONG_NAME, revoked=True), "h2")
        tx.api_tokens.insert(token("tok-3", Role.VIEWER), "h3")
    with db.read() as tx:
        assert tx.roles.get(LONG_NAME) == role
        assert tx.roles.tokens_holding(LONG_NAME) == ["tok-1"]
        assert tx.api_tokens.get("tok-1").role == LONG_NAME
        assert tx.api_tokens.get("tok-3").role is Role.VIEWER
    with db.transaction() as tx:
        tx.roles.put(StoredRole(LONG_NAME, frozenset({"fleet.read"}), "", "admin", T0))
    with db.read() as tx:
        assert tx.roles.get(LONG_NAME).permissions == {"fleet.read"}
    with db.transaction() as tx:
        tx.roles.delete(LONG_NAME)
    with db.read() as tx, pytest.raises(NotFound, match="no role named"):
        tx.roles.get(LONG_NAME)
