"""Rollout tables: rollouts (manifest + engine progress as JSON, optimistic version), device
records, device claims (a device is in at most one active rollout), timelines, and release
trains."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from edgefleet.core.rollouts.codec import rollout_from_json, rollout_to_json
from edgefleet.core.rollouts.observation import CurrentAssignment
from edgefleet.core.rollouts.record import DeviceRecord, RolloutRecord, TimelineEntry
from edgefleet.core.rollouts.release_train_spec import TrainRecord, TrainState, parse_release_train
from edgefleet.core.rollouts.rollout import DeviceState, RolloutDevice
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.errors import Conflict, NotFound
from edgefleet.store.tables import (
    release_trains,
    rollout_claims,
    rollout_devices,
    rollout_events,
    rollouts,
)

_CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _to_rollout(row: Row[Any]) -> RolloutRecord:
    spec = parse_rollout_spec(row.manifest)
    return RolloutRecord(
        rollout=rollout_from_json(row.id, spec, row.engine),
        name=row.name,
        manifest=row.manifest,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        due_at=row.due_at,
        train=row.train,
        version=row.version,
    )


def _rollout_values(record: RolloutRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "release": record.release,
        "train": record.train,
        "manifest": dict(record.manifest),
        "engine": rollout_to_json(record.rollout),
        "state": record.state.value,
        "reason": record.rollout.reason,
        "created_by": record.created_by,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "due_at": record.due_at,
        "version": record.version,
    }


def _to_device(row: Row[Any]) -> DeviceRecord:
    assignment = None
    if row.assigned_generation is not None:
        assignment = CurrentAssignment(
            row.assigned_release, row.assigned_serial, row.assigned_generation
        )
    return DeviceRecord(
        device=RolloutDevice(
            device_id=row.device_id,
            state=DeviceState(row.state),
            attempts=row.attempts,
            assigned_at=row.assigned_at,
            retry_at=row.retry_at,
            previous_release=row.previous_release,
            reason=row.reason,
        ),
        wave=row.wave,
        assignment=assignment,
        first_assigned_at=row.first_assigned_at,
        installed_at=row.installed_at,
    )


def _device_values(record: DeviceRecord) -> dict[str, Any]:
    device, assignment = record.device, record.assignment
    return {
        "wave": record.wave,
        "state": device.state.value,
        "attempts": device.attempts,
        "assigned_at": device.assigned_at,
        "retry_at": device.retry_at,
        "previous_release": device.previous_release,
        "reason": device.reason,
        "assigned_release": assignment.release if assignment else None,
        "assigned_serial": assignment.serial if assignment else None,
        "assigned_generation": assignment.generation if assignment else None,
        "first_assigned_at": record.first_assigned_at,
        "installed_at": record.installed_at,
    }


def _to_event(row: Row[Any]) -> TimelineEntry:
    return TimelineEntry(
        at=row.at,
        kind=row.kind,
        reason=row.reason,
        actor=row.actor,
        device_id=row.device_id,
        details=row.details,
        seq=row.seq,
    )


class RolloutRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    # Rollouts.

    def find(self, rollout_id: str) -> RolloutRecord | None:
        row = self._c.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
        return _to_rollout(row) if row else None

    def get(self, rollout_id: str) -> RolloutRecord:
        record = self.find(rollout_id)
        if record is None:
            raise NotFound(f"no rollout with id {rollout_id!r}", code="rollout_not_found")
        return record

    def resolve(self, id_or_name: str) -> RolloutRecord:
        """A rollout by id, or the newest rollout with that name."""
        record = self.find(id_or_name)
        if record is not None:
            return record
        row = self._c.execute(
            select(rollouts)
            .where(rollouts.c.name == id_or_name)
            .order_by(rollouts.c.created_at.desc(), rollouts.c.id.desc())
            .limit(1)
        ).first()
        if row is None:
            raise NotFound(f"no rollout with id or name {id_or_name!r}", code="rollout_not_found")
        return _to_rollout(row)

    def recent(self, *, active_only: bool = False, limit: int = 100) -> list[RolloutRecord]:
        """Newest first; `active_only` keeps those not in a final state."""
        query = select(rollouts)
        if active_only:
            query = query.where(rollouts.c.due_at.is_not(None))
        query = query.order_by(rollouts.c.created_at.desc(), rollouts.c.id.desc()).limit(limit)
        return [_to_rollout(r) for r in self._c.execute(query)]

    def active_named(self, name: str) -> RolloutRecord | None:
        row = self._c.execute(
            select(rollouts).where(rollouts.c.name == name, rollouts.c.due_at.is_not(None))
        ).first()
        return _to_rollout(row) if row else None

    def insert(self, record: RolloutRecord) -> RolloutRecord:
        self._c.execute(insert(rollouts).values(**_rollout_values(record)))
        return record

    def update(self, record: RolloutRecord) -> RolloutRecord:
        """Write `record` if nobody changed it since it was read; returns it with its new
        version."""
        values = _rollout_values(record)
        values["version"] = record.version + 1
        result = self._c.execute(
            update(rollouts)
            .where(rollouts.c.id == record.id, rollouts.c.version == record.version)
            .values(**values)
        )
        if result.rowcount != 1:
            raise Conflict(
                f"rollout {record.id} was changed concurrently; retry", code="concurrent_update"
            )
        return self.get(record.id)

    def due(self, now: datetime, limit: int) -> list[str]:
        """Ids of active rollouts due at `now`, the longest-waiting first."""
        rows = self._c.execute(
            select(rollouts.c.id)
            .where(rollouts.c.due_at.is_not(None), rollouts.c.due_at <= now)
            .order_by(rollouts.c.due_at, rollouts.c.id)
            .limit(limit)
        )
        return [r.id for r in rows]

    def next_due_at(self) -> datetime | None:
        value = self._c.execute(select(func.min(rollouts.c.due_at))).scalar_one_or_none()
        return value if isinstance(value, datetime) else None

    def set_due(self, rollout_ids: Sequence[str], at: datetime) -> None:
        """Ask the controller to look at these active rollouts by `at` (never later than
        they were already due)."""
        for chunk in _chunks(list(rollout_ids)):
            self._c.execute(
                update(rollouts)
                .where(
                    rollouts.c.id.in_(chunk),
                    rollouts.c.due_at.is_not(None),
                    rollouts.c.due_at > at,
                )
                .values(due_at=at)
            )

    def schedule(self, rollout_id: str, version: int, at: datetime) -> None:
        """Set when an unchanged active rollout is next due, unless it changed since
        `version` was read (a command meanwhile made it due already)."""
        self._c.execute(
            update(rollouts)
            .where(
                rollouts.c.id == rollout_id,
                rollouts.c.version == version,
                rollouts.c.due_at.is_not(None),
            )
            .values(due_at=at)
        )

    def postpone(self, rollout_id: str, at: datetime) -> None:
        """Make an active rollout due no earlier than `at` (after a failed reconcile)."""
        self._c.execute(
            update(rollouts)
            .where(
                rollouts.c.id == rollout_id,
                rollouts.c.due_at.is_not(None),
                rollouts.c.due_at < at,
            )
            .values(due_at=at)
        )

    # Device records.

    def devices(self, rollout_id: str) -> dict[str, DeviceRecord]:
        rows = self._c.execute(
            select(rollout_devices)
            .where(rollout_devices.c.rollout_id == rollout_id)
            .order_by(rollout_devices.c.device_id)
        )
        return {r.device_id: _to_device(r) for r in rows}

    def put_devices(self, rollout_id: str, records: Iterable[DeviceRecord]) -> None:
        """Insert or replace these device records."""
        wanted = {r.device_id: r for r in records}
        existing: set[str] = set()
        for chunk in _chunks(sorted(wanted)):
            existing |= {
                r.device_id
                for r in self._c.execute(
                    select(rollout_devices.c.device_id).where(
                        rollout_devices.c.rollout_id == rollout_id,
                        rollout_devices.c.device_id.in_(chunk),
                    )
                )
            }
        for device_id, record in wanted.items():
            values = _device_values(record)
            if device_id in existing:
                self._c.execute(
                    update(rollout_devices)
                    .where(
                        rollout_devices.c.rollout_id == rollout_id,
                        rollout_devices.c.device_id == device_id,
                    )
                    .values(**values)
                )
            else:
                self._c.execute(
                    insert(rollout_devices).values(
                        rollout_id=rollout_id, device_id=device_id, **values
                    )
                )

    def state_counts(self, rollout_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """rollout id -> device state -> how many of its devices are in it."""
        out: dict[str, dict[str, int]] = {r: {} for r in rollout_ids}
        for chunk in _chunks(list(rollout_ids)):
            rows = self._c.execute(
                select(rollout_devices.c.rollout_id, rollout_devices.c.state, func.count())
                .where(rollout_devices.c.rollout_id.in_(chunk))
                .group_by(rollout_devices.c.rollout_id, rollout_devices.c.state)
            )
            for rollout_id, state, count in rows:
                out[rollout_id][state] = int(count)
        return out

    # Claims: which active rollout holds a device.

    def claims(self, device_ids: Sequence[str] | None = None) -> dict[str, str]:
        """device id -> the active rollout holding it (of `device_ids`, or of all)."""
        if device_ids is None:
            rows = list(self._c.execute(select(rollout_claims)))
        else:
            rows = []
            for chunk in _chunks(list(device_ids)):
                rows += self._c.execute(
                    select(rollout_claims).where(rollout_claims.c.device_id.in_(chunk))
                )
        return {r.device_id: r.rollout_id for r in rows}

    def claimed_by(self, rollout_id: str) -> set[str]:
        rows = self._c.execute(
            select(rollout_claims.c.device_id).where(rollout_claims.c.rollout_id == rollout_id)
        )
        return {r.device_id for r in rows}

    def claim(self, rollout_id: str, device_ids: Sequence[str]) -> None:
        """Hold these devices for `rollout_id`; Conflict if another rollout holds one."""
        taken = {d: r for d, r in self.claims(device_ids).items() if r != rollout_id}
        if taken:
            device_id, other = sorted(taken.items())[0]
            raise Conflict(
                f"device {device_id} is already in active rollout {other}",
                code="device_in_rollout",
            )
        new = sorted(set(device_ids) - set(self.claimed_by(rollout_id)))
        if not new:
            return
        try:
            # A savepoint, so a lost race leaves the transaction usable for the error path.
            with self._c.begin_nested():
                self._c.execute(
                    insert(rollout_claims),
                    [{"device_id": d, "rollout_id": rollout_id} for d in new],
                )
        except IntegrityError:
            raise Conflict(
                "another rollout claimed some of these devices at the same moment; retry",
                code="device_in_rollout",
            ) from None

    def release(self, rollout_id: str, device_ids: Sequence[str] | None = None) -> None:
        """Let go of these devices (or all of the rollout's)."""
        if device_ids is None:
            self._c.execute(delete(rollout_claims).where(rollout_claims.c.rollout_id == rollout_id))
            return
        for chunk in _chunks(list(device_ids)):
            self._c.execute(
                delete(rollout_claims).where(
                    rollout_claims.c.rollout_id == rollout_id,
                    rollout_claims.c.device_id.in_(chunk),
                )
            )

    # The timeline.

    def append_events(self, rollout_id: str, entries: Sequence[TimelineEntry]) -> None:
        if not entries:
            return
        last = self._c.execute(
            select(func.max(rollout_events.c.seq)).where(rollout_events.c.rollout_id == rollout_id)
        ).scalar_one_or_none()
        start = int(last or 0) + 1
        self._c.execute(
            insert(rollout_events),
            [
                {
                    "rollout_id": rollout_id,
                    "seq": start + i,
                    "at": e.at,
                    "kind": e.kind,
                    "actor": e.actor,
                    "device_id": e.device_id,
                    "reason": e.reason,
                    "details": dict(e.details),
                }
                for i, e in enumerate(entries)
            ],
        )

    def events(self, rollout_id: str, *, limit: int | None = None) -> list[TimelineEntry]:
        """The timeline in order (the last `limit` entries when given)."""
        query = select(rollout_events).where(rollout_events.c.rollout_id == rollout_id)
        if limit is None:
            rows = list(self._c.execute(query.order_by(rollout_events.c.seq)))
        else:
            rows = list(self._c.execute(query.order_by(rollout_events.c.seq.desc()).limit(limit)))
            rows.reverse()
        return [_to_event(r) for r in rows]


def _to_train(row: Row[Any]) -> TrainRecord:
    return TrainRecord(
        spec=parse_release_train(row.manifest),
        manifest=row.manifest,
        state=TrainState(row.state),
        reason=row.reason,
        position=row.position,
        rollout_id=row.rollout_id,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


def _train_values(record: TrainRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "manifest": dict(record.manifest),
        "state": record.state.value,
        "reason": record.reason,
        "position": record.position,
        "rollout_id": record.rollout_id,
        "created_by": record.created_by,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "version": record.version,
    }


class ReleaseTrainRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def find(self, name: str) -> TrainRecord | None:
        row = self._c.execute(select(release_trains).where(release_trains.c.name == name)).first()
        return _to_train(row) if row else None

    def get(self, name: str) -> TrainRecord:
        record = self.find(name)
        if record is None:
            raise NotFound(f"no release train named {name!r}", code="train_not_found")
        return record

    def all(self) -> list[TrainRecord]:
        rows = self._c.execute(select(release_trains).order_by(release_trains.c.name))
        return [_to_train(r) for r in rows]

    def running(self) -> list[str]:
        rows = self._c.execute(
            select(release_trains.c.name)
            .where(release_trains.c.state == TrainState.RUNNING.value)
            .order_by(release_trains.c.name)
        )
        return [r.name for r in rows]

    def insert(self, record: TrainRecord) -> TrainRecord:
        if self.find(record.name) is not None:
            raise Conflict(f"release train {record.name!r} already exists", code="train_exists")
        self._c.execute(insert(release_trains).values(**_train_values(record)))
        return record

    def update(self, record: TrainRecord) -> TrainRecord:
        values = _train_values(record)
        values["version"] = record.version + 1
        result = self._c.execute(
            update(release_trains)
            .where(release_trains.c.name == record.name, release_trains.c.version == record.version)
            .values(**values)
        )
        if result.rowcount != 1:
            raise Conflict(
                f"release train {record.name} was changed concurrently; retry",
                code="concurrent_update",
            )
        return self.get(record.name)
