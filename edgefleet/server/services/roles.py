"""Role service: custom roles (apply, list, show, delete) and the one place a token's role
name is resolved to the permissions it holds.

A custom role is a `kind: Role` document (`core/role.py`); its permissions are read again at
every authentication, so a change reaches its tokens' next request. Roles are fleet-wide:
only an unscoped holder of `api-tokens.write` defines or deletes one, and a role some API
token that is not revoked holds cannot be deleted (409 `role_in_use`, naming the tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgefleet.clock import Clock
from edgefleet.core.governance.role import parse_role
from edgefleet.errors import Conflict, InvalidInput
from edgefleet.security.rbac import BUILTIN_ROLE_NAMES, Permission, builtin_permissions
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.store import Database, Transaction
from edgefleet.store.repositories.roles import StoredRole

KNOWN_PERMISSIONS = frozenset(p.value for p in Permission)


def resolve_permissions(tx: Transaction, role: str) -> frozenset[Permission] | None:
    """The permissions role `role` holds now: a built-in role's from the table, a custom
    role's as stored; None when no role has that name."""
    builtin = builtin_permissions(role)
    if builtin is not None:
        return builtin
    stored = tx.roles.find(role)
    return None if stored is None else frozenset(Permission(p) for p in stored.permissions)


def require_role(tx: Transaction, role: str) -> None:
    """InvalidInput `unknown_role` unless `role` names a built-in or a custom role."""
    if resolve_permissions(tx, role) is None:
        custom = [r.name for r in tx.roles.all()]
        raise InvalidInput(
            f"role: unknown role {role!r} (built-in: {', '.join(sorted(BUILTIN_ROLE_NAMES))}; "
            f"custom: {', '.join(custom) or 'none'})",
            code="unknown_role",
        )


class RoleService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def apply(
        self, ctx: OperatorContext, document: Mapping[str, Any], *, dry_run: bool = False
    ) -> tuple[StoredRole, str]:
        """Store a Role document: (role, created|updated|unchanged)."""
        ctx.require(Permission.API_TOKENS_WRITE)
        ctx.principal.require_fleet_wide("define roles")
        spec = parse_role(document, known_permissions=KNOWN_PERMISSIONS,
                          builtin=BUILTIN_ROLE_NAMES)  # fmt: skip
        now = self._clock.now()
        with self._db.rehearsal() if dry_run else self._db.transaction() as tx:
            existing = tx.roles.find(spec.name)
            if existing is not None and (existing.permissions, existing.description) == (
                spec.permissions,
                spec.description,
            ):
                return existing, "unchanged"
            stored = StoredRole(spec.name, spec.permissions, spec.description, ctx.actor, now)
            tx.roles.put(stored)
            outcome = "created" if existing is None else "updated"
            details: dict[str, Any] = {"outcome": outcome,
                                       "permissions": sorted(spec.permissions)}  # fmt: skip
            if existing is not None:
                details["added"] = sorted(spec.permissions - existing.permissions)
                details["removed"] = sorted(existing.permissions - spec.permissions)
            record_action(tx, ctx, "role.apply", f"role/{spec.name}", now, details)
        return stored, outcome

    def list_roles(self, ctx: OperatorContext) -> list[dict[str, Any]]:
        """Every role, built-in ones first, each with its permissions and whether it is
        built in."""
        ctx.require(Permission.API_TOKENS_READ)
        builtin = [_builtin_view(name) for name in sorted(BUILTIN_ROLE_NAMES)]
        with self._db.read() as tx:
            return builtin + [role_view(r, tx.roles.tokens_holding(r.name))
                              for r in tx.roles.all()]  # fmt: skip

    def show(self, ctx: OperatorContext, name: str) -> dict[str, Any]:
        ctx.require(Permission.API_TOKENS_READ)
        if name in BUILTIN_ROLE_NAMES:
            return _builtin_view(name)
        with self._db.read() as tx:
            return role_view(tx.roles.get(name), tx.roles.tokens_holding(name))

    def delete(self, ctx: OperatorContext, name: str) -> None:
        """Delete a custom role no API token that is not revoked holds."""
        ctx.require(Permission.API_TOKENS_WRITE)
        if name in BUILTIN_ROLE_NAMES:
            raise InvalidInput(f"{name!r} is a built-in role, which cannot be deleted",
                               code="builtin_role")  # fmt: skip
        now = self._clock.now()
        with self._db.transaction() as tx:
            tx.roles.get(name)
            ctx.principal.require_fleet_wide("delete roles")
            holders = tx.roles.tokens_holding(name)
            if holders:
                raise Conflict(f"role {name!r} is held by {len(holders)} API token(s) that are "
                               f"not revoked ({', '.join(holders)}): revoke them first",
                               code="role_in_use")  # fmt: skip
            tx.roles.delete(name)
            record_action(tx, ctx, "role.delete", f"role/{name}", now)


def _builtin_view(name: str) -> dict[str, Any]:
    permissions = builtin_permissions(name) or frozenset()
    return {"name": name, "builtin": True, "permissions": sorted(p.value for p in permissions),
            "description": "built-in", "updated_by": None, "updated_at": None,
            "tokens": None}  # fmt: skip


def role_view(role: StoredRole, tokens: list[str] | None = None) -> dict[str, Any]:
    """A custom role as the API shows it; `tokens`: the ids of those holding it (None: not
    looked up)."""
    return {"name": role.name, "builtin": False, "permissions": sorted(role.permissions),
            "description": role.description, "updated_by": role.updated_by,
            "updated_at": role.updated_at.isoformat(), "tokens": tokens}  # fmt: skip
