"""Approval service: changes that wait for a second operator (four-eyes).

A root rotation held by a policy (`approval.trust_changes`) is stored as a pending change
(`TrustService.rotate_root`). Another admin approves it here: the requester cannot
(`core.approval.decide_approver`, 403 `own_change`), the rotation is applied only then, and
the audit log's `trust.rotate-root` names both the requester and the approver. Rollouts
awaiting approval have their own state (`RolloutService.approve`).
"""

from __future__ import annotations

from typing import Any

from edgefleet.clock import Clock
from edgefleet.core.governance.approval import Requester, decide_approver
from edgefleet.errors import Conflict, Forbidden
from edgefleet.security.rbac import Permission
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.trust import ROOT_ROTATION, TrustService
from edgefleet.store import Database
from edgefleet.store.repositories.policies import PendingChange


class ApprovalService:
    def __init__(self, db: Database, clock: Clock, trust: TrustService) -> None:
        self._db = db
        self._clock = clock
        self._trust = trust

    def list_changes(self, ctx: OperatorContext) -> list[PendingChange]:
        """The latest changes, pending and decided, newest first."""
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.pending_changes.all()

    def approve(self, ctx: OperatorContext, change_id: str) -> tuple[PendingChange, int]:
        """Approve and apply a pending root rotation: (the change, the new root version)."""
        ctx.require(Permission.TRUST_ADMIN)
        now = self._clock.now()
        with self._db.read() as tx:
            change = tx.pending_changes.get(change_id)
        if change.state != "pending":
            raise Conflict(f"change {change.id} was already {change.state} by "
                           f"{change.decided_by}", code="change_decided")  # fmt: skip
        decision = decide_approver(
            Requester.from_actor(change.requested_by),
            Requester(ctx.principal.token_id, ctx.principal.name),
        )
        if not decision.allowed:
            raise Forbidden(decision.reason, code="own_change")
        if change.kind != ROOT_ROTATION:
            raise Conflict(f"change {change.id} is a {change.kind}, which this server cannot "
                           "apply", code="change_unknown")  # fmt: skip
        payload: dict[str, Any] = dict(change.payload)
        targets = payload.get("targets")
        version = self._trust.apply_rotation(
            ctx, payload["root"].encode(), targets.encode() if targets else None, now,
            {"change": change.id, "requested_by": change.requested_by, "approved_by": ctx.actor},
        )  # fmt: skip
        with self._db.transaction() as tx:
            tx.pending_changes.decide(change.id, "approved", ctx.actor, now)
            return tx.pending_changes.get(change.id), version
