"""Policies and pending changes tables: the Policy documents in force, and the changes that
wait for a second operator's approval."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from edgefleet.errors import NotFound
from edgefleet.store.tables import pending_changes, policies


@dataclass(frozen=True)
class StoredPolicy:
    name: str
    document: Mapping[str, Any]
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class PendingChange:
    id: str
    kind: str  # root-rotation
    summary: str
    payload: Mapping[str, Any]
    requested_by: str  # the requester's actor (`name (token id)`)
    requested_at: datetime
    state: str  # pending | approved
    decided_by: str | None = None
    decided_at: datetime | None = None


def _to_policy(row: Row[Any]) -> StoredPolicy:
    return StoredPolicy(row.name, row.document, row.updated_by, row.updated_at)


def _to_change(row: Row[Any]) -> PendingChange:
    return PendingChange(row.id, row.kind, row.summary, row.payload, row.requested_by,
                         row.requested_at, row.state, row.decided_by, row.decided_at)  # fmt: skip


class PolicyRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def all(self) -> list[StoredPolicy]:
        rows = self._c.execute(select(policies).order_by(policies.c.name))
        return [_to_policy(r) for r in rows]

    def find(self, name: str) -> StoredPolicy | None:
        row = self._c.execute(select(policies).where(policies.c.name == name)).first()
        return _to_policy(row) if row else None

    def put(self, policy: StoredPolicy) -> None:
        values = {"document": dict(policy.document), "updated_by": policy.updated_by,
                  "updated_at": policy.updated_at}  # fmt: skip
        if self.find(policy.name) is None:
            self._c.execute(insert(policies).values(name=policy.name, **values))
        else:
            self._c.execute(update(policies).where(policies.c.name == policy.name).values(**values))

    def delete(self, name: str) -> None:
        if self.find(name) is None:
            raise NotFound(f"no policy named {name!r}", code="policy_not_found")
        self._c.execute(delete(policies).where(policies.c.name == name))


class PendingChangeRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def insert(self, change: PendingChange) -> None:
        self._c.execute(insert(pending_changes).values(
            id=change.id, kind=change.kind, summary=change.summary, payload=dict(change.payload),
            requested_by=change.requested_by, requested_at=change.requested_at,
            state=change.state, decided_by=change.decided_by, decided_at=change.decided_at,
        ))  # fmt: skip

    def get(self, change_id: str) -> PendingChange:
        row = self._c.execute(
            select(pending_changes).where(pending_changes.c.id == change_id)
        ).first()
        if row is None:
            raise NotFound(f"no pending change with id {change_id!r}", code="change_not_found")
        return _to_change(row)

    def all(self) -> list[PendingChange]:
        rows = self._c.execute(
            select(pending_changes).order_by(pending_changes.c.requested_at.desc()).limit(200)
        )
        return [_to_change(r) for r in rows]

    def decide(self, change_id: str, state: str, by: str, at: datetime) -> bool:
        """Move a pending change to `state`; False when another request decided it first."""
        result = self._c.execute(
            update(pending_changes)
            .where(pending_changes.c.id == change_id, pending_changes.c.state == "pending")
            .values(state=state, decided_by=by, decided_at=at)
        )
        return result.rowcount == 1
