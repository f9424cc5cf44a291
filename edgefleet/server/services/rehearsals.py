"""Rehearsal service: stores the reports `edgefleet lab rehearse --save` uploads (audited,
size-bounded) and lists them for the dashboard's Lab view, which sets each one next to the
real rollout of the same name."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from edgefleet.clock import Clock
from edgefleet.core.rollouts.rehearsal_record import (
    MAX_REHEARSAL_BYTES,
    RehearsalRecord,
    check_rollout_name,
    summarize_report,
)
from edgefleet.errors import PayloadTooLarge
from edgefleet.security.rbac import Permission
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.store import Database


class RehearsalService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def save(
        self, ctx: OperatorContext, rollout: str, report: Mapping[str, Any]
    ) -> RehearsalRecord:
        """Store a lab report under the rollout's name (`rollouts.write`: it sits next to the
        rollout for everyone to see, like the rollout itself)."""
        ctx.require(Permission.ROLLOUTS_WRITE)
        size = len(json.dumps(report, separators=(",", ":")).encode())
        if size > MAX_REHEARSAL_BYTES:
            raise PayloadTooLarge(f"the rehearsal report is {size} bytes; at most "
                                  f"{MAX_REHEARSAL_BYTES} are stored")  # fmt: skip
        release, outcome = summarize_report(report)
        now = self._clock.now()
        record = RehearsalRecord(
            id=f"reh-{secrets.token_hex(6)}", rollout=check_rollout_name(rollout),
            release=release, outcome=outcome, report=report, size_bytes=size,
            created_by=ctx.actor, created_at=now,
        )  # fmt: skip
        with self._db.transaction() as tx:
            tx.rehearsals.insert(record)
            record_action(tx, ctx, "rehearsal.save", f"rehearsal/{record.id}", now, {
                "rollout": record.rollout, "release": release, "outcome": outcome,
                "size_bytes": size,
            })  # fmt: skip
        return record

    def newest(
        self, ctx: OperatorContext, rollout: str | None, limit: int
    ) -> list[RehearsalRecord]:
        """Newest first, without their reports."""
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.rehearsals.newest(rollout, limit)

    def get(self, ctx: OperatorContext, rehearsal_id: str) -> RehearsalRecord:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.rehearsals.get(rehearsal_id)
