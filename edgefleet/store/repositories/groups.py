"""Groups table: named label selectors."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select

from edgefleet.core.group import Group
from edgefleet.errors import Conflict, NotFound
from edgefleet.store.tables import groups


def _to_group(row: Row[Any]) -> Group:
    return Group(
        name=row.name,
        selector=row.selector,
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
    )


class GroupRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def find(self, name: str) -> Group | None:
        row = self._c.execute(select(groups).where(groups.c.name == name)).first()
        return _to_group(row) if row else None

    def get(self, name: str) -> Group:
        group = self.find(name)
        if group is None:
            raise NotFound(f"no group named {name!r}", code="group_not_found")
        return group

    def all(self) -> list[Group]:
        return [_to_group(r) for r in self._c.execute(select(groups).order_by(groups.c.name))]

    def insert(self, group: Group) -> None:
        if self.find(group.name) is not None:
            raise Conflict(f"group {group.name!r} already exists", code="group_exists")
        self._c.execute(
            insert(groups).values(
                name=group.name,
                selector=group.selector,
                description=group.description,
                created_by=group.created_by,
                created_at=group.created_at,
            )
        )

    def delete(self, name: str) -> None:
        self.get(name)
        self._c.execute(delete(groups).where(groups.c.name == name))
