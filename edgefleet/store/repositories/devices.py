"""Devices table: enrollment records, reported inventory and the desired-state document."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from edgefleet.core.device import Device
from edgefleet.core.device_names import normalize_device_name
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.presence import Presence, PresenceState
from edgefleet.core.updates.release import ReleaseAssignment
from edgefleet.errors import Conflict, NotFound
from edgefleet.store.notifications import notify_desired
from edgefleet.store.tables import devices

ID_CHUNK = 500  # ids per IN (...) list, well under every backend's parameter limit

# Statements every device request runs, built once: building one and computing its cache
# key costs more than SQLite takes to run it.
_FIND = select(devices).where(devices.c.id == bindparam("b_id"))
_FIND_MANY = select(devices).where(devices.c.id.in_(bindparam("b_ids", expanding=True)))
_RECORD_HEARTBEAT = (
    update(devices)
    .where(devices.c.id == bindparam("b_id"))
    .values(
        last_seen=bindparam("b_last_seen", type_=devices.c.last_seen.type),
        applied_generation=bindparam("b_applied", type_=devices.c.applied_generation.type),
        release_status=bindparam("b_release_status", type_=devices.c.release_status.type),
    )
)
_RECORD_REPORT = _RECORD_HEARTBEAT.values(
    inventory=bindparam("b_inventory", type_=devices.c.inventory.type)
)


def _to_device(row: Row[Any]) -> Device:
    return Device(
        id=row.id,
        name=row.name,
        public_key=row.public_key,
        enrollment=EnrollmentState(row.enrollment),
        labels=row.labels,
        inventory=row.inventory,
        enrollment_token_id=row.enrollment_token_id,
        created_at=row.created_at,
        last_seen=row.last_seen,
        heartbeat_interval_s=row.heartbeat_interval_s,
        desired_generation=row.desired_generation,
        desired=row.desired,
        applied_generation=row.applied_generation,
        release_assignment=(
            ReleaseAssignment.from_dict(row.release_assignment) if row.release_assignment else None
        ),
        release_status=row.release_status,
        version=row.version,
        presence=_to_presence(row),
    )


def _to_presence(row: Any) -> Presence | None:
    if row.presence is None:
        return None
    return Presence(PresenceState(row.presence), row.presence_at, int(row.presence_seq),
                    row.presence_interval_s)  # fmt: skip


# The optimistic update of a whole row, built once: every column from `v_<name>`, where the
# row still has the version read (`b_id`, `b_version`).
_UPDATE = (
    update(devices)
    .where(devices.c.id == bindparam("b_id"), devices.c.version == bindparam("b_version"))
    .values({c.name: bindparam(f"v_{c.name}", type_=c.type) for c in devices.c})
)


def _values(device: Device) -> dict[str, Any]:
    return {
        "id": device.id,
        "name": device.name,
        "public_key": device.public_key,
        "enrollment": device.enrollment.value,
        "labels": dict(device.labels),
        "inventory": dict(device.inventory),
        "enrollment_token_id": device.enrollment_token_id,
        "created_at": device.created_at,
        "last_seen": device.last_seen,
        "heartbeat_interval_s": device.heartbeat_interval_s,
        "desired_generation": device.desired_generation,
        "desired": dict(device.desired),
        "applied_generation": device.applied_generation,
        "release_assignment": (
            device.release_assignment.to_dict() if device.release_assignment else None
        ),
        "release_status": dict(device.release_status),
        "version": device.version,
        **_presence_values(device.presence),
    }


def _presence_values(presence: Presence | None) -> dict[str, Any]:
    if presence is None:
        return {"presence": None, "presence_at": None, "presence_seq": None,
                "presence_interval_s": None}  # fmt: skip
    return {"presence": presence.state.value, "presence_at": presence.at,
            "presence_seq": presence.seq,
            "presence_interval_s": presence.idle_interval_s}  # fmt: skip


class DeviceRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def find(self, device_id: str) -> Device | None:
        row = self._c.execute(_FIND, {"b_id": device_id}).first()
        return _to_device(row) if row else None

    def find_many(self, device_ids: Sequence[str]) -> dict[str, Device]:
        """The devices among `device_ids` that exist, by id."""
        out: dict[str, Device] = {}
        for start in range(0, len(device_ids), ID_CHUNK):
            chunk = list(device_ids[start : start + ID_CHUNK])
            out.update(
                (row.id, _to_device(row)) for row in self._c.execute(_FIND_MANY, {"b_ids": chunk})
            )
        return out

    def get(self, device_id: str) -> Device:
        device = self.find(device_id)
        if device is None:
            raise NotFound(f"no device with id {device_id!r}", code="device_not_found")
        return device

    def resolve(self, id_or_name: str) -> Device:
        """A device by id, else by name: the device that holds it (names are unique among
        devices that are not revoked), else the one revoked device that had it."""
        device = self.find(id_or_name)
        if device is not None:
            return device
        name = normalize_device_name(id_or_name)
        holder = self.name_holder(name)
        if holder is not None:
            return holder
        query = select(devices.c.id).where(devices.c.name == name)
        ids = list(self._c.execute(query.order_by(devices.c.id).limit(6)).scalars())
        if len(ids) > 1:
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise Conflict(
                f"no device holds the name {name!r}; revoked devices had it ({shown}): "
                "use the device id",
                code="ambiguous_device",
            )
        if not ids:
            raise NotFound(f"no device with id or name {name!r}", code="device_not_found")
        return self.get(ids[0])

    def name_holder(self, name: str) -> Device | None:
        """The device that is not revoked named `name` (stored names are NFC)."""
        row = self._c.execute(
            select(devices).where(
                devices.c.name == name, devices.c.enrollment != EnrollmentState.REVOKED.value
            )
        ).first()
        return _to_device(row) if row else None

    def desired_generations(self, device_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """(desired generation, enrollment state) of each of these devices that exists, in
        one query per `ID_CHUNK` ids: cheap enough to poll for every waiting long poll."""
        out: dict[str, tuple[int, str]] = {}
        for start in range(0, len(device_ids), ID_CHUNK):
            chunk = list(device_ids[start : start + ID_CHUNK])
            rows = self._c.execute(
                select(devices.c.id, devices.c.desired_generation, devices.c.enrollment).where(
                    devices.c.id.in_(chunk)
                )
            )
            out.update({row.id: (row.desired_generation, row.enrollment) for row in rows})
        return out

    def find_by_public_key(self, public_key: str) -> Device | None:
        row = self._c.execute(select(devices).where(devices.c.public_key == public_key)).first()
        return _to_device(row) if row else None

    def all(self) -> list[Device]:
        rows = self._c.execute(select(devices).order_by(devices.c.created_at, devices.c.id))
        return [_to_device(r) for r in rows]

    def connection_facts(self) -> list[tuple[str, datetime | None, float, Presence | None]]:
        """(enrollment, last_seen, heartbeat_interval_s, presence) of every device: what
        fleet counts by status need, without decoding any device's documents."""
        columns = (devices.c.enrollment, devices.c.last_seen, devices.c.heartbeat_interval_s,
                   devices.c.presence, devices.c.presence_at, devices.c.presence_seq,
                   devices.c.presence_interval_s)  # fmt: skip
        return [(r[0], r[1], r[2], _to_presence(r)) for r in self._c.execute(select(*columns))]

    def count(self) -> int:
        return int(self._c.execute(select(func.count()).select_from(devices)).scalar_one())

    def insert(self, device: Device) -> Device:
        """Store a new device; Conflict (`device_name_taken`) if a device that is not revoked
        already holds its name, found first or by the unique index in a race."""
        taken = Conflict(
            f"device name {device.name!r} is taken by another device: choose another name "
            "(a revoked device frees its name)",
            code="device_name_taken",
        )
        if self.name_holder(device.name) is not None:
            raise taken
        try:
            # A savepoint, so a lost race leaves the transaction usable for the error path.
            with self._c.begin_nested():
                self._c.execute(insert(devices).values(**_values(device)))
        except IntegrityError:
            if self.name_holder(device.name) is not None:
                raise taken from None
            raise
        return device

    def delete(self, device_id: str) -> None:
        """Remove a device's row: its key, labels, inventory and desired state."""
        self._c.execute(delete(devices).where(devices.c.id == device_id))
        notify_desired(self._c, device_id, None)

    def update(self, device: Device) -> Device:
        """Write `device` if nobody changed it since it was read (optimistic check)."""
        written = replace(device, version=device.version + 1)
        values = {f"v_{name}": value for name, value in _values(written).items()}
        result = self._c.execute(_UPDATE, {**values, "b_id": device.id,
                                           "b_version": device.version})  # fmt: skip
        if result.rowcount != 1:
            raise Conflict(
                f"device {device.id} was changed concurrently; retry", code="concurrent_update"
            )
        approved = device.enrollment == EnrollmentState.APPROVED
        notify_desired(self._c, device.id, device.desired_generation if approved else None)
        return written

    def record_report(
        self,
        device_id: str,
        seen_at: datetime,
        inventory: dict[str, Any] | None,
        applied_generation: int,
        release_status: dict[str, Any],
    ) -> None:
        """Store what a heartbeat reported; touches only device-owned columns. `inventory`
        None: unchanged, the stored one is kept."""
        values = {"b_id": device_id, "b_last_seen": seen_at, "b_applied": applied_generation,
                  "b_release_status": release_status}  # fmt: skip
        if inventory is None:
            self._c.execute(_RECORD_HEARTBEAT, values)
        else:
            self._c.execute(_RECORD_REPORT, {**values, "b_inventory": inventory})
