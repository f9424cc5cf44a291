"""Migration controller: admits pending migrations under the fleet-wide and per-zone
limits, then advances each active one by at most one step per tick from what its two nodes
report (`core.migration.advance_migration`).

    admit: reserve a placement generation for the target's copy (placement row, optimistic),
           enter `prestaging`, re-render the target's desired state (the copy appears)
    advance: store the step; re-render source and target (checkpoint request, restore,
             start, removal after an abort); on `completed` move the replica in the
             placement to the target at the reserved generation: the source's copy is no
             longer listed, so the source stops it (fencing)

Every step is one transaction guarded by the migration's row version, so a restarted or
duplicated controller repeats nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

from edgefleet.artifacts.blobstore import BlobStore
from edgefleet.clock import Clock
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.migration import (
    Migration,
    MigrationObservation,
    MigrationState,
    abort_migration,
    admit_migrations,
    advance_migration,
    move_to,
)
from edgefleet.core.workloads.move import MoveKind, PlacementMove
from edgefleet.core.workloads.placement import Assignment, Placement
from edgefleet.core.workloads.placement_record import with_assignment
from edgefleet.errors import EdgefleetError
from edgefleet.server.services.checkpoints import CheckpointService
from edgefleet.server.services.desired import refresh_device, refresh_hosting_nodes
from edgefleet.server.services.fleet_view import FleetView, load_view
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database, Transaction

log = logging.getLogger(__name__)


class MigrationController:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: WorkloadSettings,
        watch: DesiredStateWatch,
        blobs: BlobStore,
        checkpoints: CheckpointService,
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._watch = watch
        self._blobs = blobs
        self._checkpoints = checkpoints

    def tick(self) -> list[Migration]:
        """Admit and advance; returns the migrations that changed."""
        now = self._clock.now()
        with self._db.read() as tx:
            if not tx.migrations.active():
                return []  # the common case, without reading the whole fleet
            view = load_view(tx, now)
        changed: list[Migration] = []
        pending = [m for m in view.migrations if m.state is MigrationState.PENDING]
        if pending:
            admission = admit_migrations(
                pending, view.migrations, view.zone_of(), self._settings.migration_limits()
            )
            for migration_id in admission.admitted:
                changed.extend(self._guarded(migration_id, partial(self._admit, now=now)))
        for m in view.migrations:
            if m.state is MigrationState.PENDING:
                continue
            advanced = self._advance(view, m, now)
            if advanced is not m:
                changed.extend(self._guarded(m.id, partial(_unless_changed, advanced)))
        return changed

    def _advance(self, view: FleetView, m: Migration, now: datetime) -> Migration:
        if m.workload not in view.workloads:
            return abort_migration(m, now, f"workload {m.workload} was deleted")
        key = (m.workload, m.replica)
        assignment = next((a for a in view.placement.placement.assignments
                           if (a.workload, a.replica) == key), None)  # fmt: skip
        source = view.health.get(m.source)
        target = view.health.get(m.target)
        checkpoint = None if source is None else source.checkpoint_for(m.id)
        stored = bool(checkpoint and checkpoint.sha256 and self._blobs.exists(checkpoint.sha256))
        obs = MigrationObservation(
            source_liveness=view.liveness(m.source),
            target_liveness=Liveness.DEAD if target is None else target.state,
            target_copy=None if target is None else target.copy_status(m.workload, m.replica),
            checkpoint=checkpoint,
            checkpoint_stored=stored,
            still_on_source=assignment is not None and assignment.node_id == m.source,
        )
        return advance_migration(m, obs, now, self._settings.migration_timing())

    def _admit(self, tx: Transaction, m: Migration, *, now: datetime) -> Migration | None:
        if m.state is not MigrationState.PENDING:
            return None
        record = tx.placement.load()
        key = (m.workload, m.replica)
        assignment = next((a for a in record.placement.assignments
                           if (a.workload, a.replica) == key), None)  # fmt: skip
        target = tx.node_health.find(m.target)
        device = tx.devices.find(m.target)
        problem = None
        if assignment is None or assignment.node_id != m.source:
            problem = f"the placement no longer has the replica on {m.source}"
        elif device is None or target is None or target.state is not Liveness.ALIVE:
            problem = f"target {m.target} is not alive"
        elif target.drain.draining:
            problem = f"target {m.target} is draining: {target.drain.reason}"
        if problem is not None:
            return abort_migration(m, now, problem)
        generation = record.placement.generation + 1
        tx.placement.save(record, Placement(record.placement.assignments, generation),
                          list(record.decisions), record.computed_at or now)  # fmt: skip
        return move_to(m, MigrationState.PRESTAGING, now,
                       f"started ({m.trigger}: {m.reason}); {m.target} pre-stages the "
                       "artifacts", generation=generation)  # fmt: skip

    def _guarded(
        self, migration_id: str, decide: Callable[[Transaction, Migration], Migration | None]
    ) -> list[Migration]:
        """Run `decide(tx, m)` on the stored migration and save what it returns, with the
        placement commit and the desired state of both nodes, in one transaction."""
        refreshed: list[str] = []
        try:
            with self._db.transaction() as tx:
                m = tx.migrations.get(migration_id)
                new = decide(tx, m)
                if new is None or new == m:
                    return []
                saved = tx.migrations.update(new)
                moved = None
                if saved.state is MigrationState.COMPLETED:
                    moved = self._commit(tx, saved)
                refreshed = [d for d in (saved.source, saved.target) if refresh_device(tx, d)]
                if moved is not None:
                    done = {saved.source, saved.target}
                    refreshed += refresh_hosting_nodes(tx, *moved, done)
        except EdgefleetError as e:
            log.warning(
                "migration step failed; will retry",
                extra={"migration": migration_id, "error": e.message},
            )
            return []
        for device_id in refreshed:
            self._watch.notify(device_id)
        if not saved.active:
            self._forget_archive(saved)
        step = saved.steps[-1] if saved.steps else None
        log.info("migration %s", saved.state, extra={
            "migration": saved.id, "workload": saved.workload, "replica": saved.replica,
            "from": saved.source, "to": saved.target, "weight_pct": saved.weight_pct,
            "detail": step.detail if step else "",
        })  # fmt: skip
        return [saved]

    def _forget_archive(self, m: Migration) -> None:
        """A finished migration's state archive is no longer needed (the target restored
        it, or the source kept running), nor does it count against the source's quota any
        more. A crash before this leaves a blob behind (the checkpoint sweep takes it),
        never a missing one."""
        if m.checkpoint_sha256 is not None:
            self._checkpoints.forget(m.checkpoint_sha256)

    def _commit(self, tx: Transaction, m: Migration) -> tuple[Placement, Placement]:
        """The replica now belongs to the target, at the generation its copy runs with;
        returns the placement before and after."""
        record = tx.placement.load()
        moved = Assignment(m.workload, m.replica, m.target, m.generation)
        placement = with_assignment(record.placement, moved)
        now = self._clock.now()
        tx.placement.save(record, placement, list(record.decisions), now)
        tx.placement_moves.record([PlacementMove(
            workload=m.workload, replica=m.replica, from_node_id=m.source, to_node_id=m.target,
            kind=MoveKind.MIGRATION, reason=f"migration {m.id} ({m.trigger}): {m.reason}",
            generation=m.generation, at=now,
        )])  # fmt: skip
        return record.placement, placement


def _unless_changed(decided: Migration, _tx: Transaction, stored: Migration) -> Migration | None:
    """What was decided from the fleet view, if the stored row is still the one it read."""
    return decided if stored.version == decided.version else None
