"""Audit log table: the hash chain, appended inside the transaction of the action it records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select

from edgefleet.security.audit import AuditRecord, chain_record
from edgefleet.store.tables import audit_log

# Any fixed 64-bit number: serializes appends on PostgreSQL (SQLite's writer lock already does).
_APPEND_LOCK_KEY = 0x6564676566_1EE7


def _to_record(row: Row[Any]) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        request_id=row.request_id,
        details=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class AuditRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def head(self) -> AuditRecord | None:
        row = self._c.execute(select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)).first()
        return _to_record(row) if row else None

    def append(
        self,
        at: str,
        actor: str,
        action: str,
        target: str,
        request_id: str,
        details: Mapping[str, Any],
    ) -> AuditRecord:
        if self._c.dialect.name == "postgresql":
            self._c.execute(select(func.pg_advisory_xact_lock(_APPEND_LOCK_KEY)))
        record = chain_record(self.head(), at, actor, action, target, request_id, details)
        self._c.execute(
            insert(audit_log).values(
                seq=record.seq,
                at=record.at,
                actor=record.actor,
                action=record.action,
                target=record.target,
                request_id=record.request_id,
                details=dict(record.details),
                prev_hash=record.prev_hash,
                hash=record.hash,
            )
        )
        return record

    def page(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        query = select(audit_log).where(audit_log.c.seq > after_seq)
        rows = self._c.execute(query.order_by(audit_log.c.seq).limit(limit))
        return [_to_record(r) for r in rows]

    def latest(self, limit: int) -> list[AuditRecord]:
        """The newest `limit` records, oldest first."""
        rows = self._c.execute(select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit))
        return [_to_record(r) for r in reversed(rows.all())]
