"""Audit service: appends operator actions to the chain, and reads it back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgefleet.clock import isoformat_utc
from edgefleet.security.audit import AuditRecord
from edgefleet.security.rbac import Permission, Principal
from edgefleet.store import Database, Transaction

MAX_PAGE = 1000


@dataclass(frozen=True)
class OperatorContext:
    """Who is acting and in which request: what every audit record names."""

    principal: Principal
    request_id: str

    @property
    def actor(self) -> str:
        return self.principal.actor

    def require(self, permission: Permission) -> None:
        self.principal.require(permission)


@dataclass(frozen=True)
class DeviceContext:
    """A device acting on its own behalf (enrollment)."""

    device_id: str
    request_id: str

    @property
    def actor(self) -> str:
        return f"device {self.device_id}"


def record_action(
    tx: Transaction,
    ctx: OperatorContext | DeviceContext,
    action: str,
    target: str,
    now: datetime,
    details: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """Append one record inside the caller's transaction (the action and its record commit
    together or not at all)."""
    return tx.audit.append(
        isoformat_utc(now), ctx.actor, action, target, ctx.request_id, details or {}
    )


class AuditService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def page(self, ctx: OperatorContext, after_seq: int, limit: int) -> list[AuditRecord]:
        ctx.require(Permission.AUDIT_READ)
        with self._db.read() as tx:
            return tx.audit.page(after_seq, min(limit, MAX_PAGE))

    def latest(self, ctx: OperatorContext, limit: int) -> list[AuditRecord]:
        ctx.require(Permission.AUDIT_READ)
        with self._db.read() as tx:
            return tx.audit.latest(min(limit, MAX_PAGE))
