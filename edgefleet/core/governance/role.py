"""Custom roles: a `kind: Role` document naming the permissions its tokens hold.

Built-in roles (`security/rbac.py`) are a fixed table; an admin may add roles of their own,
each a subset of the known permissions, and bind API tokens to them by name::

    kind: Role
    metadata: {name: rollout-only}
    spec:
      description: starts rollouts, changes nothing else
      permissions: [fleet.read, rollouts.write]

A document is judged against the permission names and built-in role names it is given, so
this module knows neither table.

>>> spec = parse_role({"kind": "Role", "metadata": {"name": "rollout-only"},
...                    "spec": {"permissions": ["fleet.read", "rollouts.write"]}},
...                   known_permissions={"fleet.read", "rollouts.write"}, builtin={"admin"})
>>> sorted(spec.permissions)
['fleet.read', 'rollouts.write']
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from edgefleet.core.manifest import read_list, read_string, split_manifest
from edgefleet.errors import InvalidInput

_SPEC_KEYS = frozenset({"permissions", "description"})
# Lowercase, digits, dots and dashes: the shape of the built-in names (`rollout-approver`).
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,62}[a-z0-9])?$")
MAX_DESCRIPTION = 256


@dataclass(frozen=True)
class RoleSpec:
    name: str
    permissions: frozenset[str]
    description: str = ""


def parse_role(
    document: Mapping[str, object],
    *,
    known_permissions: Collection[str],
    builtin: Collection[str],
) -> RoleSpec:
    """A Role document, or InvalidInput naming the field and why: a malformed name, the name
    of a built-in role (they cannot be redefined), no permission, or an unknown one."""
    parts = split_manifest(document, "Role", _SPEC_KEYS)
    name = read_string(parts.name, parts.name_path)
    if not _NAME.match(name):
        raise InvalidInput(f"{parts.name_path}: {name!r} is not a role name (lowercase "
                           "letters, digits, '.' and '-', at most 64 characters)")  # fmt: skip
    if name in builtin:
        raise InvalidInput(f"{parts.name_path}: {name!r} is a built-in role, which cannot be "
                           "redefined: choose another name")  # fmt: skip
    p = parts.prefix
    listed = read_list(parts.spec.get("permissions"), f"{p}permissions")
    if not listed:
        raise InvalidInput(f"{p}permissions: a role holds at least one permission")
    permissions = set()
    for i, item in enumerate(listed):
        permission = read_string(item, f"{p}permissions[{i}]")
        if permission not in known_permissions:
            raise InvalidInput(f"{p}permissions[{i}]: unknown permission {permission!r} "
                               f"(known: {', '.join(sorted(known_permissions))})")  # fmt: skip
        permissions.add(permission)
    given = parts.spec.get("description")
    description = "" if given is None else read_string(given, f"{p}description")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"{p}description: at most {MAX_DESCRIPTION} characters")
    return RoleSpec(name, frozenset(permissions), description)
