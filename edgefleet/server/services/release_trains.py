"""Release train service: operators apply trains (`kind: ReleaseTrain`); the rollout
controller steps the running ones (`advance`), starting each next rollout once the previous
one vouched for its release (see `core.release_train_spec`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from edgefleet.clock import Clock
from edgefleet.core.rollouts.codec import time_to_json
from edgefleet.core.rollouts.release_train_spec import (
    TrainRecord,
    TrainState,
    check_train_update,
    next_train_step,
    parse_release_train,
)
from edgefleet.core.updates.release import Ref
from edgefleet.errors import Conflict
from edgefleet.security.rbac import Permission, Principal, Role
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.rollouts import create_rollout
from edgefleet.store import Database, Transaction

log = logging.getLogger(__name__)


def train_context(name: str) -> OperatorContext:
    """How a train appears in the audit log and timelines when it starts a rollout."""
    principal = Principal(token_id=f"train:{name}", name=f"train:{name}", role=Role.OPERATOR)
    return OperatorContext(principal, f"release-train/{name}")


def train_view(record: TrainRecord) -> dict[str, Any]:
    """A train as the API shows it."""
    spec = record.spec
    return {
        "name": record.name,
        "state": record.state.value,
        "reason": record.reason,
        "releases": [str(r) for r in spec.releases],
        "position": record.position,
        "current_release": str(spec.releases[record.position]) if record.rollout_id else None,
        "rollout_id": record.rollout_id,
        "allow_insufficient_data": spec.allow_insufficient_data,
        "description": spec.description,
        "created_by": record.created_by,
        "created_at": time_to_json(record.created_at),
        "updated_at": time_to_json(record.updated_at),
        "manifest": dict(record.manifest),
    }


class ReleaseTrainService:
    def __init__(self, db: Database, clock: Clock, wake: Callable[[], None]) -> None:
        self._db = db
        self._clock = clock
        self._wake = wake

    def apply(
        self, ctx: OperatorContext, manifest: Mapping[str, Any], *, dry_run: bool = False
    ) -> tuple[TrainRecord, str]:
        """Create or update a train: (the train, "created" | "updated" | "unchanged"). A dry
        run decides the same in a transaction that is rolled back."""
        ctx.require(Permission.ROLLOUTS_WRITE)
        spec = parse_release_train(manifest)
        now = self._clock.now()
        with self._db.rehearsal() if dry_run else self._db.transaction() as tx:
            old = tx.release_trains.find(spec.name)
            if old is None:
                record = tx.release_trains.insert(
                    TrainRecord(spec, dict(manifest), TrainState.RUNNING, "created", 0, None,
                                ctx.actor, now, now)
                )  # fmt: skip
                action = "created"
            elif dict(old.manifest) == dict(manifest):
                return old, "unchanged"
            else:
                started = old.position + 1 if old.rollout_id is not None else 0
                check_train_update(old.spec, spec, started)
                record = tx.release_trains.update(
                    replace(old, spec=spec, manifest=dict(manifest), updated_at=now)
                )
                action = "updated"
            record_action(
                tx, ctx, "release-train.create" if old is None else "release-train.update",
                f"release-train/{spec.name}", now,
                {"releases": [str(r) for r in spec.releases]},
            )  # fmt: skip
        if not dry_run:
            self._wake()
        return record, action

    def list_trains(self, ctx: OperatorContext) -> list[TrainRecord]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.release_trains.all()

    def get(self, ctx: OperatorContext, name: str) -> TrainRecord:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.release_trains.get(name)

    # The controller's side.

    def running(self) -> list[str]:
        with self._db.read() as tx:
            return tx.release_trains.running()

    def advance(self, name: str) -> bool:
        """Take the train's next step; True when it started a rollout."""
        now = self._clock.now()
        with self._db.transaction() as tx:
            train = tx.release_trains.get(name)
            if train.state is not TrainState.RUNNING:
                return False
            current = tx.rollouts.get(train.rollout_id) if train.rollout_id else None
            step = next_train_step(
                train.spec,
                train.position,
                current.rollout if current else None,
                _signed(tx, train),
            )
            if step.start is None:
                state = TrainState.STOPPED if step.stop else train.state
                if (state, step.reason) != (train.state, train.reason):
                    tx.release_trains.update(
                        replace(train, state=state, reason=step.reason, updated_at=now)
                    )
                    if step.stop:
                        log.warning("release train stopped",
                                    extra={"train": name, "reason": step.reason})  # fmt: skip
                return False
            return self._start(tx, train, step.start, step.reason, now)

    def _start(
        self, tx: Transaction, train: TrainRecord, index: int, reason: str, now: datetime
    ) -> bool:
        manifest = train.spec.rollout_manifest(index)
        ctx = train_context(train.name)
        try:
            created = create_rollout(tx, ctx, manifest, now, train=train.name)
        except Conflict as e:
            # These two are refused before anything is written; anything else rolls back.
            if e.code not in ("devices_in_rollout", "rollout_exists"):
                raise
            waiting = f"waiting to start {train.spec.releases[index]}: {e.message}"
            if waiting != train.reason:
                tx.release_trains.update(replace(train, reason=waiting, updated_at=now))
            return False
        tx.release_trains.update(
            replace(train, position=index, rollout_id=created.record.id, reason=reason,
                    updated_at=now)
        )  # fmt: skip
        log.info("release train started a rollout", extra={
            "train": train.name, "rollout_id": created.record.id,
            "release": str(train.spec.releases[index])})  # fmt: skip
        return True


def _signed(tx: Transaction, train: TrainRecord) -> dict[str, bool]:
    """Which of the train's current and next releases exist, and whether signed."""
    out: dict[str, bool] = {}
    for ref in train.spec.releases[train.position : train.position + 2]:
        release = tx.releases.find(Ref(ref.name, ref.version))
        if release is not None:
            out[str(ref)] = release.signed
    return out
