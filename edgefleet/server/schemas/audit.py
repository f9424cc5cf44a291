"""HTTP wire schemas: the audit log."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from edgefleet.security.audit import AuditRecord


class AuditRecordOut(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    target: str
    request_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, record: AuditRecord) -> AuditRecordOut:
        return cls(
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
