"""Custom roles against a real control plane: an admin applies a `kind: Role` document with
`edgefleet apply -f`, mints a token holding it, and the token may do exactly what the role
lists; a change to the role reaches the token's next request; built-in roles cannot be
redefined, an unknown permission is named (400), a role a live token holds cannot be
deleted (409), and every change is in the audit log. (The RBAC matrix checks a custom role
over every route: `test_rbac_matrix.py`.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.client import FleetClient
from edgefleet.errors import ApiError
from edgefleet.localfleet import ServerProcess
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN

ROLE = """\
kind: Role
metadata: {name: %s}
spec:
  description: starts rollouts, changes nothing else
  permissions: [%s]
"""


def apply_role(server: ServerProcess, tmp_path: Path, name: str, permissions: str) -> str:
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(ROLE % (name, permissions))
    env = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}
    result = run_cli("apply", "-f", str(manifest), env=env)
    assert result.code == 0, result.stderr
    return result.stdout


def test_a_custom_role_grants_its_permissions_and_changes_reach_the_next_request(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    assert "role/rollout-only created" in apply_role(server, tmp_path, "rollout-only",
                                                     "fleet.read, rollouts.write")  # fmt: skip
    env = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}
    created = run_cli("tokens", "create", "ci", "--role", "rollout-only", "-o", "json", env=env)
    assert created.code == 0, created.stderr
    token = created.json()
    assert token["role"] == "rollout-only"
    with server.client(token["token"]) as ci:
        assert ci.whoami()["role"] == "rollout-only"
        ci.list_devices()
        with pytest.raises(ApiError, match=r"role 'rollout-only' lacks permission "
                                           r"'groups\.write'") as refused:  # fmt: skip
            ci.create_group("cams", "kind=camera")
        assert (refused.value.status, refused.value.code) == (403, "insufficient_role")

        assert "role/rollout-only updated" in apply_role(
            server, tmp_path, "rollout-only", "fleet.read, rollouts.write, groups.write"
        )
        assert ci.create_group("cams", "kind=camera")["name"] == "cams"
        apply_role(server, tmp_path, "rollout-only", "rollouts.write")
        with pytest.raises(ApiError, match=r"lacks permission 'fleet\.read'"):
            ci.list_devices()

    shown = run_cli("roles", "show", "rollout-only", "-o", "json", env=env).json()
    assert shown["permissions"] == ["rollouts.write"] and shown["tokens"] == [token["id"]]
    listed = run_cli("roles", "list", env=env)
    assert "rollout-only" in listed.stdout and "viewer" in listed.stdout

    deleted = run_cli("roles", "delete", "rollout-only", env=env)
    assert deleted.code != 0
    assert (
        f"role 'rollout-only' is held by 1 API token(s) that are not revoked ({token['id']})"
        in deleted.stderr
    )
    admin.revoke_api_token(token["id"])
    assert run_cli("roles", "delete", "rollout-only", env=env).code == 0
    with pytest.raises(ApiError, match="no role named 'rollout-only'"):
        admin.get_role("rollout-only")

    actions = [(r["action"], r["target"], r["details"]) for r in admin.audit_tail(20)
               if r["target"] == "role/rollout-only"]  # fmt: skip
    assert [(a, d.get("outcome")) for a, _, d in actions] == [
        ("role.apply", "created"),
        ("role.apply", "updated"),
        ("role.apply", "updated"),
        ("role.delete", None),
    ]
    assert actions[1][2]["added"] == ["groups.write"]
    assert actions[2][2]["removed"] == ["fleet.read", "groups.write"]


def test_roles_that_cannot_be_defined_or_held_are_refused_with_the_reason(
    admin: FleetClient,
) -> None:
    def document(name: str, *permissions: str) -> dict[str, object]:
        return {"kind": "Role", "metadata": {"name": name},
                "spec": {"permissions": list(permissions)}}  # fmt: skip

    with pytest.raises(ApiError, match=r"spec\.permissions\[1\]: unknown permission "
                                       r"'fleet\.nuke'") as unknown:  # fmt: skip
        admin.apply_role(document("odd", "fleet.read", "fleet.nuke"))
    assert unknown.value.status == 400
    with pytest.raises(ApiError, match="'admin' is a built-in role, which cannot be redefined"):
        admin.apply_role(document("admin", "fleet.read"))
    with pytest.raises(ApiError, match="'viewer' is a built-in role, which cannot be deleted"):
        admin.delete_role("viewer")
    with pytest.raises(ApiError, match="unknown role 'nobody'") as no_role:
        admin.create_api_token("ghost", "nobody")
    assert (no_role.value.status, no_role.value.code) == (400, "unknown_role")
    assert admin.list_roles()[0]["builtin"] is True


def test_only_an_unscoped_admin_defines_roles(server: ServerProcess, admin: FleetClient) -> None:
    scoped = admin.create_api_token("eu-admin", "admin", scope="region=eu")["token"]
    operator = admin.create_api_token("op", "operator")["token"]
    doc = {"kind": "Role", "metadata": {"name": "reader"}, "spec": {"permissions": ["fleet.read"]}}
    with server.client(scoped) as eu_admin:
        with pytest.raises(ApiError, match="cannot define roles") as out:
            eu_admin.apply_role(doc)
        assert out.value.code == "out_of_scope"
    with (
        server.client(operator) as op,
        pytest.raises(ApiError, match=r"lacks permission 'api-tokens\.write'"),
    ):
        op.apply_role(doc)
