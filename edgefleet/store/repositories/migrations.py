"""Planned migrations, each with its reported steps (optimistic version per row)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from edgefleet.core.workloads.migration import (
    TERMINAL,
    Migration,
    MigrationState,
    MigrationStep,
    MigrationTrigger,
)
from edgefleet.errors import Conflict, NotFound
from edgefleet.store.tables import migrations


def _step_to_json(step: MigrationStep) -> dict[str, Any]:
    return {"state": step.state.value, "weight_pct": step.weight_pct,
            "at": step.at.isoformat(), "detail": step.detail}  # fmt: skip


def _step_from_json(raw: dict[str, Any]) -> MigrationStep:
    return MigrationStep(MigrationState(raw["state"]), int(raw["weight_pct"]),
                         datetime.fromisoformat(raw["at"]), str(raw["detail"]))  # fmt: skip


def _to_migration(row: Row[Any]) -> Migration:
    return Migration(
        id=row.id,
        workload=row.workload,
        replica=row.replica,
        source=row.source,
        target=row.target,
        trigger=MigrationTrigger(row.trigger),
        reason=row.reason,
        stateful=row.stateful,
        created_by=row.created_by,
        created_at=row.created_at,
        source_generation=row.source_generation,
        state=MigrationState(row.state),
        state_since=row.state_since,
        generation=row.generation,
        weight_pct=row.weight_pct,
        checkpoint_sha256=row.checkpoint_sha256,
        checkpoint_size_bytes=row.checkpoint_size_bytes,
        steps=tuple(_step_from_json(s) for s in row.steps),
        version=row.version,
    )


def _values(m: Migration) -> dict[str, Any]:
    return {
        "id": m.id,
        "workload": m.workload,
        "replica": m.replica,
        "source": m.source,
        "target": m.target,
        "trigger": m.trigger.value,
        "reason": m.reason,
        "stateful": m.stateful,
        "state": m.state.value,
        "state_since": m.state_since,
        "source_generation": m.source_generation,
        "generation": m.generation,
        "weight_pct": m.weight_pct,
        "checkpoint_sha256": m.checkpoint_sha256,
        "checkpoint_size_bytes": m.checkpoint_size_bytes,
        "steps": [_step_to_json(s) for s in m.steps],
        "created_by": m.created_by,
        "created_at": m.created_at,
        "version": m.version,
    }


class MigrationRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def find(self, migration_id: str) -> Migration | None:
        row = self._c.execute(select(migrations).where(migrations.c.id == migration_id)).first()
        return _to_migration(row) if row else None

    def get(self, migration_id: str) -> Migration:
        found = self.find(migration_id)
        if found is None:
            raise NotFound(f"no migration {migration_id!r}", code="migration_not_found")
        return found

    def active(self) -> list[Migration]:
        """Every migration not completed or aborted, oldest first."""
        done = [s.value for s in TERMINAL]
        rows = self._c.execute(
            select(migrations)
            .where(migrations.c.state.not_in(done))
            .order_by(migrations.c.created_at, migrations.c.id)
        )
        return [_to_migration(r) for r in rows]

    def with_checkpoint(self, sha256: str) -> list[Migration]:
        """The migrations whose state archive is this blob."""
        rows = self._c.execute(select(migrations).where(migrations.c.checkpoint_sha256 == sha256))
        return [_to_migration(r) for r in rows]

    def of_workload(self, workload: str, limit: int = 50) -> list[Migration]:
        """The workload's migrations, newest first."""
        rows = self._c.execute(
            select(migrations)
            .where(migrations.c.workload == workload)
            .order_by(migrations.c.created_at.desc(), migrations.c.id.desc())
            .limit(limit)
        )
        return [_to_migration(r) for r in rows]

    def insert(self, m: Migration) -> Migration:
        self._c.execute(insert(migrations).values(**_values(m)))
        return m

    def update(self, m: Migration) -> Migration:
        """Write `m` if nobody changed it since it was read (optimistic check)."""
        values = _values(m)
        values["version"] = m.version + 1
        result = self._c.execute(
            update(migrations)
            .where(migrations.c.id == m.id, migrations.c.version == m.version)
            .values(**values)
        )
        if result.rowcount != 1:
            raise Conflict(f"migration {m.id} was changed concurrently; retry",
                           code="concurrent_update")  # fmt: skip
        return self.get(m.id)
