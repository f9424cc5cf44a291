"""Roles table: the custom roles admins defined, each with the permissions its API tokens
hold (`core/role.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from edgefleet.errors import NotFound
from edgefleet.store.tables import api_tokens, roles


@dataclass(frozen=True)
class StoredRole:
    name: str
    permissions: frozenset[str]
    description: str
    updated_by: str
    updated_at: datetime


def _to_role(row: Row[Any]) -> StoredRole:
    return StoredRole(row.name, frozenset(row.permissions), row.description, row.updated_by,
                      row.updated_at)  # fmt: skip


class RoleRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def all(self) -> list[StoredRole]:
        return [_to_role(r) for r in self._c.execute(select(roles).order_by(roles.c.name))]

    def find(self, name: str) -> StoredRole | None:
        row = self._c.execute(select(roles).where(roles.c.name == name)).first()
        return _to_role(row) if row else None

    def get(self, name: str) -> StoredRole:
        found = self.find(name)
        if found is None:
            raise NotFound(f"no role named {name!r}", code="role_not_found")
        return found

    def put(self, role: StoredRole) -> None:
        values = {"permissions": sorted(role.permissions), "description": role.description,
                  "updated_by": role.updated_by, "updated_at": role.updated_at}  # fmt: skip
        if self.find(role.name) is None:
            self._c.execute(insert(roles).values(name=role.name, **values))
        else:
            self._c.execute(update(roles).where(roles.c.name == role.name).values(**values))

    def delete(self, name: str) -> None:
        self.get(name)
        self._c.execute(delete(roles).where(roles.c.name == name))

    def tokens_holding(self, name: str) -> list[str]:
        """The ids of the API tokens bound to role `name` that are not revoked."""
        rows = self._c.execute(
            select(api_tokens.c.id)
            .where(api_tokens.c.role == name, api_tokens.c.revoked.is_(False))
            .order_by(api_tokens.c.created_at)
        )
        return [r.id for r in rows]
