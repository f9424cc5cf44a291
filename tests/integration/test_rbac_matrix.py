"""Roles against a real server: every operator operation in `/openapi.json` by every role of
the role table (`security/rbac.py`) and by a custom role (`kind: Role`, `core/role.py`,
checked by the same single lookup). Each operation's required permission comes from the
`x-permission` the server derives from the route's own authentication dependency, so the
matrix has one source: a role holding the permission is let through (whatever the dummy
input then earns, never 401/403), any other gets 403 `insufficient_role`. An operation
without a declared authentication fails here, so a new route cannot skip the table. The same
matrix runs with every role bound to a device scope (`core/scope.py`), in and out of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess
from edgefleet.security.rbac import ROLE_PERMISSIONS, Permission, Role
from edgefleet.server.openapi import ANY_ROLE
from tests.device_requests import RawDevice

CALLERS = {"operator", "device", "none"}
# A custom role beside the built-in ones: it must be checked by the same table lookup.
CUSTOM_ROLE = "rollout-only"
CUSTOM_PERMISSIONS = frozenset({Permission.FLEET_READ, Permission.ROLLOUTS_WRITE})
ROLES: dict[str, frozenset[Permission]] = {
    **{role.value: ROLE_PERMISSIONS[role] for role in Role},
    CUSTOM_ROLE: CUSTOM_PERMISSIONS,
}


@pytest.fixture(scope="module")
def custom_role(server: ServerProcess) -> str:
    with server.client() as admin:
        spec = {"permissions": sorted(CUSTOM_PERMISSIONS)}
        answer = admin.apply_role({"kind": "Role", "metadata": {"name": CUSTOM_ROLE}, "spec": spec})
    assert answer["role"]["permissions"] == sorted(CUSTOM_PERMISSIONS)
    return CUSTOM_ROLE


@pytest.fixture(scope="module")
def spec(server: ServerProcess) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def refused_for_role(method: str, answer: httpx.Response) -> bool:
    if answer.status_code != 403:
        return False
    return method == "HEAD" or answer.json()["error"]["code"] == "insufficient_role"


def test_every_operation_declares_who_may_call_it(spec: dict[str, Any]) -> None:
    ops = list(operations(spec))
    assert len(ops) > 50
    problems = []
    for method, path, op in ops:
        callers = op.get("x-auth")
        if not callers or not set(callers) <= CALLERS:
            problems.append(f"{method} {path}: x-auth {callers!r}")
        elif "operator" in callers:
            permission = op.get("x-permission")
            if permission != ANY_ROLE and permission not in set(Permission):
                problems.append(f"{method} {path}: x-permission {permission!r}")
    assert not problems, "\n".join(problems)


def test_each_role_calls_exactly_what_the_role_table_allows(
    server: ServerProcess, admin: FleetClient, spec: dict[str, Any], custom_role: str
) -> None:
    tokens = {role: admin.create_api_token(f"matrix-{role}", role)["token"]
              for role in ROLES}  # fmt: skip
    checked = 0
    problems = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, path, op in operations(spec):
            if "operator" not in op.get("x-auth", ()):
                continue
            target = path
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    target = target.replace("{" + param["name"] + "}", "matrix-none")
            permission = op["x-permission"]
            for role, token in tokens.items():
                allowed = permission == ANY_ROLE or Permission(permission) in ROLES[role]
                headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
                answer = http.request(method, target, content=b"{}", headers=headers)
                checked += 1
                seen = f"{method} {path} as {role} ({permission}): {answer.status_code}"
                if allowed and answer.status_code in (401, 403):
                    problems.append(f"{seen}, should be allowed: {answer.text[:200]}")
                elif not allowed and not refused_for_role(method, answer):
                    problems.append(f"{seen}, should be 403: {answer.text[:200]}")
    assert checked > 100
    assert not problems, "\n".join(problems)


def test_scoped_roles_call_what_their_role_allows_and_are_refused_only_out_of_scope(
    server: ServerProcess, admin: FleetClient, spec: dict[str, Any], custom_role: str
) -> None:
    """Every operation by every role bound to a scope the device `matrix-dev` is in, and to
    one it is outside, with that device named in every path parameter: the role decides
    first (403 `insufficient_role`); in scope nothing more is refused, out of scope only
    `out_of_scope` may be."""
    enrollment = admin.create_enrollment_token(auto_approve=True)["token"]
    assert RawDevice(server.url).enroll(enrollment, "matrix-dev", {"region": "matrix"}).is_success
    scopes = {"in": "region=matrix", "out": "region=elsewhere"}
    tokens = {(role, where): admin.create_api_token(f"scoped-{role}-{where}", role,
                                                    scope=scope)["token"]
              for role in ROLES for where, scope in scopes.items()}  # fmt: skip
    checked = 0
    problems = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, path, op in operations(spec):
            if "operator" not in op.get("x-auth", ()):
                continue
            target = path
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    target = target.replace("{" + param["name"] + "}", "matrix-dev")
            permission = op["x-permission"]
            for (role, where), token in tokens.items():
                allowed = permission == ANY_ROLE or Permission(permission) in ROLES[role]
                headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
                answer = http.request(method, target, content=b"{}", headers=headers)
                checked += 1
                seen = f"{method} {target} as {role} {where} scope: {answer.status_code}"
                refused = answer.status_code == 401 or (
                    answer.status_code == 403
                    and (where == "in" or method == "HEAD" or
                         answer.json()["error"]["code"] != "out_of_scope")
                )  # fmt: skip
                if not allowed and not refused_for_role(method, answer):
                    problems.append(f"{seen}, should be 403 insufficient_role")
                elif allowed and refused:
                    problems.append(f"{seen}: {answer.text[:200]}")
    assert checked > 200
    assert not problems, "\n".join(problems)
