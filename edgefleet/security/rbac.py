"""Roles and what they may do: least privilege as a plain table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from edgefleet.core.scope import ScopeDecision, decide_device, decide_scope, decide_selector
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


def require(role: Role, permission: Permission) -> None:
    """Raise Forbidden naming the role and the permission unless `role` holds it."""
    if permission not in ROLE_PERMISSIONS[role]:
        raise Forbidden(
            f"role {role.value!r} lacks permission {permission.value!r}",
            code="insufficient_role",
        )


@dataclass(frozen=True)
class Principal:
    """An authenticated operator: the API token used, the role it carries and the device
    scope it is bound to (None: the whole fleet; `core/scope.py` decides)."""

    token_id: str
    name: str
    role: Role
    scope: Selector | None = None

    @property
    def actor(self) -> str:
        """How this principal appears in the audit log."""
        return self.name if self.name == self.token_id else f"{self.name} ({self.token_id})"

    def require(self, permission: Permission) -> None:
        require(self.role, permission)

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
