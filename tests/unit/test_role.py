"""Role documents (`core/role.py`) and the one RBAC check (`security/rbac.py`) for roles
that are not built in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.governance.role import parse_role
from edgefleet.errors import Forbidden, InvalidInput
from edgefleet.security.rbac import BUILTIN_ROLE_NAMES, Permission, Principal, Role, require

KNOWN = frozenset(p.value for p in Permission)


def role(name: str = "rollout-only", **spec: object) -> dict[str, object]:
    return {"kind": "Role", "metadata": {"name": name},
            "spec": {"permissions": ["fleet.read", "rollouts.write"], **spec}}  # fmt: skip


def parse(document: dict[str, object]) -> object:
    return parse_role(document, known_permissions=KNOWN, builtin=BUILTIN_ROLE_NAMES)


def test_a_role_document_names_its_permissions_and_description() -> None:
    spec = parse_role(role(description="starts rollouts"), known_permissions=KNOWN,
                      builtin=BUILTIN_ROLE_NAMES)  # fmt: skip
    assert (spec.name, spec.description) == ("rollout-only", "starts rollouts")
    assert spec.permissions == {"fleet.read", "rollouts.write"}


def test_an_unknown_permission_is_named() -> None:
    doc = role(permissions=["fleet.read", "fleet.destroy"])
    with pytest.raises(InvalidInput, match=r"spec\.permissions\[1\]: unknown permission "
                                           r"'fleet\.destroy'"):  # fmt: skip
        parse(doc)


@pytest.mark.parametrize("name", sorted(BUILTIN_ROLE_NAMES))
def test_a_builtin_role_cannot_be_redefined(name: str) -> None:
    with pytest.raises(InvalidInput, match=f"'{name}' is a built-in role"):
        parse(role(name))


@pytest.mark.parametrize("document, problem", [
    (role(permissions=[]), "at least one permission"),
    (role("Has Spaces"), "not a role name"),
    (role("x" * 65), "not a role name"),
    (role(color="red"), "color"),
])  # fmt: skip
def test_malformed_role_documents_are_refused(document: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        parse(document)


@given(st.sets(st.sampled_from(sorted(Permission)), min_size=1),
       st.sampled_from(sorted(Permission)))  # fmt: skip
def test_a_custom_principal_holds_exactly_its_roles_permissions(
    held: set[Permission], wanted: Permission
) -> None:
    principal = Principal("tok-1", "ci", "rollout-only", permissions=frozenset(held))
    if wanted in held:
        principal.require(wanted)
    else:
        with pytest.raises(Forbidden, match=f"role 'rollout-only' lacks permission '{wanted}'"):
            principal.require(wanted)


def test_a_builtin_principal_takes_the_table_and_a_custom_one_needs_its_permissions() -> None:
    assert Principal("tok-1", "a", Role.VIEWER).permissions == {Permission.FLEET_READ,
                                                                Permission.AUDIT_READ}  # fmt: skip
    with pytest.raises(ValueError, match="custom role 'ci' given without its permissions"):
        Principal("tok-1", "a", "ci")
    with pytest.raises(Forbidden, match=r"role 'ci' lacks permission 'fleet\.read'"):
        require("ci", Permission.FLEET_READ)
