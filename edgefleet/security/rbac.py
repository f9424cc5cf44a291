"""Roles and what they may do: least privilege as a plain table.

A token's role is a name: one of the built-in `Role`s, whose permissions are the table
below, or a custom role an admin defined with a `kind: Role` document (`core/role.py`),
whose permissions are stored. The token service resolves the name to a permission set at
every authentication; the `Principal` carries both, and `require` is the one check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from edgefleet.core.governance.scope import (
    ScopeDecision,
    decide_device,
    decide_scope,
    decide_selector,
)
from edgefleet.core.selector import Selector
from edgefleet.errors import Forbidden


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    ROLLOUT_APPROVER = "rollout-approver"
    RELEASE_SIGNER = "release-signer"


class Permission(StrEnum):
    FLEET_READ = "fleet.read"
    DEVICES_WRITE = "devices.write"
    ENROLLMENT_TOKENS_WRITE = "enrollment-tokens.write"
    GROUPS_WRITE = "groups.write"
    AUDIT_READ = "audit.read"
    ARTIFACTS_WRITE = "artifacts.write"
    RELEASES_WRITE = "releases.write"
    ROLLOUTS_WRITE = "rollouts.write"
    TELEMETRY_WRITE = "telemetry.write"
    WORKLOADS_WRITE = "workloads.write"
    TRUST_ADMIN = "trust.admin"
    API_TOKENS_READ = "api-tokens.read"
    API_TOKENS_WRITE = "api-tokens.write"
    ROLLOUTS_APPROVE = "rollouts.approve"
    POLICIES_WRITE = "policies.write"


_VIEWER = frozenset({Permission.FLEET_READ, Permission.AUDIT_READ})
_OPERATOR = _VIEWER | {
    Permission.DEVICES_WRITE,
    Permission.ENROLLMENT_TOKENS_WRITE,
    Permission.GROUPS_WRITE,
    Permission.ARTIFACTS_WRITE,
    Permission.RELEASES_WRITE,
    Permission.ROLLOUTS_WRITE,
    Permission.TELEMETRY_WRITE,
    Permission.WORKLOADS_WRITE,
    Permission.ROLLOUTS_APPROVE,
}
# Trust changes (the TUF root, its keys and thresholds) are for admins only.
_ADMIN = _OPERATOR | {
    Permission.API_TOKENS_READ,
    Permission.API_TOKENS_WRITE,
    Permission.TRUST_ADMIN,
    Permission.POLICIES_WRITE,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: _OPERATOR,
    Role.ADMIN: _ADMIN,
    # Narrow roles for one duty: the second pair of eyes on rollouts, and the people who
    # stage and sign releases without changing a device.
    Role.ROLLOUT_APPROVER: _VIEWER | {Permission.ROLLOUTS_APPROVE},
    Role.RELEASE_SIGNER: _VIEWER | {Permission.RELEASES_WRITE},
}


BUILTIN_ROLE_NAMES = frozenset(r.value for r in Role)


def role_named(name: str) -> str:
    """A stored role name as the principal carries it: the `Role` member for a built-in
    name (so `role is Role.ADMIN` holds), the name itself for a custom role."""
    return Role(name) if name in BUILTIN_ROLE_NAMES else name


def builtin_permissions(role: str) -> frozenset[Permission] | None:
    """The permissions of a built-in role, None for any other name."""
    return ROLE_PERMISSIONS[Role(role)] if role in BUILTIN_ROLE_NAMES else None


def require(role: str, permission: Permission, permissions: frozenset[Permission] | None = None
            ) -> None:  # fmt: skip
    """Raise Forbidden naming the role and the permission unless the role holds it
    (`permissions`: a custom role's; a built-in role's come from the table)."""
    held = builtin_permissions(role) if permissions is None else permissions
    if held is None or permission not in held:
        raise Forbidden(
            f"role {str(role)!r} lacks permission {permission.value!r}",
            code="insufficient_role",
        )


@dataclass(frozen=True)
class Principal:
    """An authenticated operator: the API token used, the role it carries (a built-in
    `Role` or a custom role's name), the device scope it is bound to (None: the whole fleet;
    `core/scope.py` decides) and the role's permissions (resolved by the token service for a
    custom role; taken from the table for a built-in one when not given)."""

    token_id: str
    name: str
    role: str
    scope: Selector | None = None
    permissions: frozenset[Permission] = field(default=frozenset())

    def __post_init__(self) -> None:
        if not self.permissions:
            builtin = builtin_permissions(self.role)
            if builtin is None:
                raise ValueError(f"custom role {self.role!r} given without its permissions")
            object.__setattr__(self, "permissions", builtin)

    @property
    def actor(self) -> str:
        """How this principal appears in the audit log."""
        return self.name if self.name == self.token_id else f"{self.name} ({self.token_id})"

    def require(self, permission: Permission) -> None:
        require(self.role, permission, self.permissions)

    def require_on_device(
        self, permission: Permission, device: str, labels: Mapping[str, str]
    ) -> None:
        """`require`, then Forbidden `out_of_scope` unless the device is in this scope."""
        self.require(permission)
        _enforce(decide_device(self.scope, device, labels))

    def require_on_selector(
        self, permission: Permission, selector: Selector, matched: Mapping[str, Mapping[str, str]]
    ) -> None:
        """`require`, then Forbidden `out_of_scope` unless `selector` stays within this scope
        (`matched`: the names and labels of the devices it matches now)."""
        self.require(permission)
        _enforce(decide_selector(self.scope, selector, matched))

    def require_fleet_wide(self, action: str) -> None:
        """Forbidden `out_of_scope` when this principal is scoped: `action` could reach
        devices outside any scope."""
        if self.scope is not None:
            raise Forbidden(f"a token scoped to '{self.scope}' cannot {action}: it could "
                            "reach devices outside the scope", code="out_of_scope")  # fmt: skip

    def require_scope(self, wanted: Selector | None) -> None:
        """Forbidden `out_of_scope` unless a token bound to `wanted` stays within this scope."""
        _enforce(decide_scope(self.scope, wanted))


def _enforce(decision: ScopeDecision) -> None:
    if not decision.allowed:
        raise Forbidden(decision.reason, code="out_of_scope")


# The control plane itself, for actions it takes on its own (bootstrap, controllers).
SYSTEM = Principal(token_id="system", name="system", role=Role.ADMIN)
