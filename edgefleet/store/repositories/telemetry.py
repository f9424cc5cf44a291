"""Telemetry tables: ingest cursors, raw windows, hourly rollups, the fleet policy and KPI
detector states.

Windows are `telemetry.windows.Window` values; their sketches are stored as msgpack of
`DDSketch.to_wire()`, and their tags as canonical JSON (`[["k", "v"], ...]`, sorted).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgpack
from sqlalchemy import Connection, Row, Table, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from edgefleet.core.telemetry.clock import ClockRecord
from edgefleet.core.telemetry.ingest import IngestCursor
from edgefleet.core.telemetry.policy import (
    FleetTelemetryPolicy,
    default_fleet_policy,
    parse_fleet_policy,
)
from edgefleet.core.telemetry.rollup import HOUR_S, HourTotal
from edgefleet.core.telemetry.series import DeviceWindow
from edgefleet.core.telemetry.sketch import DDSketch
from edgefleet.core.telemetry.windows import MetricKind, Tags, Window
from edgefleet.errors import Conflict
from edgefleet.store.tables import (
    telemetry_cursors,
    telemetry_detectors,
    telemetry_policies,
    telemetry_rollups,
    telemetry_windows,
)

NAME_QUERY_CHUNK = 500  # device ids per IN (...) list

FLEET_POLICY = "fleet"
# Sealed telemetry: {"enabled", "key_id", "public_key"} (services/sealing.py).
SEALING_POLICY = "sealing"


def tags_to_text(tags: Tags) -> str:
    return json.dumps([list(pair) for pair in tags], separators=(",", ":"))


def tags_from_text(text: str) -> Tags:
    return tuple((str(k), str(v)) for k, v in json.loads(text))


def tags_key(text: str) -> str:
    """A fixed-size key for a tag set (rollups are unique per device, name, tags and hour)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _sketch_bytes(sketch: DDSketch | None) -> bytes | None:
    return None if sketch is None else msgpack.packb(sketch.to_wire(), use_bin_type=True)


def _sketch_from(data: bytes | None) -> DDSketch | None:
    if data is None:
        return None
    return DDSketch.from_wire(msgpack.unpackb(bytes(data), raw=False))


def _window_values(window: Window) -> dict[str, Any]:
    return {
        "name": window.name,
        "kind": window.kind.value,
        "tags": tags_to_text(window.tags),
        "start_s": window.start_s,
        "length_s": window.length_s,
        "count": window.count,
        "sum": window.sum,
        "min": window.min,
        "max": window.max,
        "last": window.last,
        "sketch": _sketch_bytes(window.sketch),
    }


def _to_window(row: Row[Any]) -> Window:
    values = row._mapping  # `count` would be the tuple method on the row itself
    return Window(
        name=values["name"],
        kind=MetricKind(values["kind"]),
        tags=tags_from_text(values["tags"]),
        start_s=values["start_s"],
        length_s=values["length_s"],
        count=values["count"],
        sum=values["sum"],
        min=values["min"],
        max=values["max"],
        last=values["last"],
        sketch=_sketch_from(values["sketch"]),
    )


def _to_cursor(row: Row[Any]) -> IngestCursor:
    return IngestCursor(
        acked_through_seq=row.acked_through_seq,
        batches_stored=row.batches_stored,
        windows_stored=row.windows_stored,
        dropped_batches_total=row.dropped_batches_total,
        dropped_windows_total=row.dropped_windows_total,
        last_batch_at=row.last_batch_at,
        clock=ClockRecord(
            skew_s=row.clock_skew_s,
            newest_end_s=row.newest_window_end_s,
            shifted_batches=row.shifted_batches,
            shifted_windows=row.shifted_windows,
            last_shift_s=row.last_shift_s,
            largest_shift_s=row.largest_shift_s,
            last_reason=row.last_shift_reason,
        ),
    )


def _cursor_values(cursor: IngestCursor) -> dict[str, Any]:
    return {
        "acked_through_seq": cursor.acked_through_seq,
        "batches_stored": cursor.batches_stored,
        "windows_stored": cursor.windows_stored,
        "dropped_batches_total": cursor.dropped_batches_total,
        "dropped_windows_total": cursor.dropped_windows_total,
        "last_batch_at": cursor.last_batch_at,
        "clock_skew_s": cursor.clock.skew_s,
        "newest_window_end_s": cursor.clock.newest_end_s,
        "shifted_batches": cursor.clock.shifted_batches,
        "shifted_windows": cursor.clock.shifted_windows,
        "last_shift_s": cursor.clock.last_shift_s,
        "largest_shift_s": cursor.clock.largest_shift_s,
        "last_shift_reason": cursor.clock.last_reason,
    }


class TelemetryRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    # Ingest.

    def cursor(self, device_id: str) -> IngestCursor | None:
        row = self._c.execute(
            select(telemetry_cursors).where(telemetry_cursors.c.device_id == device_id)
        ).first()
        return _to_cursor(row) if row else None

    def fleet_totals(self) -> tuple[int, int, int, int]:
        """Over every device's cursor: (devices that uploaded, batches stored, windows and
        batches the devices dropped from full queues), summed by the database."""
        c = telemetry_cursors.c
        row = self._c.execute(
            select(
                func.count(),
                func.coalesce(func.sum(c.batches_stored), 0),
                func.coalesce(func.sum(c.dropped_windows_total), 0),
                func.coalesce(func.sum(c.dropped_batches_total), 0),
            )
        ).one()
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    def save_cursor(self, device_id: str, seen: IngestCursor | None, new: IngestCursor) -> None:
        """Write `new` if the stored cursor is still `seen` (None: there was none): two
        uploads of the same batch racing on two replicas cannot both store it."""
        if seen is None:
            try:
                self._c.execute(
                    insert(telemetry_cursors).values(device_id=device_id, **_cursor_values(new))
                )
            except IntegrityError:
                raise _raced(device_id) from None
            return
        result = self._c.execute(
            update(telemetry_cursors)
            .where(
                telemetry_cursors.c.device_id == device_id,
                telemetry_cursors.c.acked_through_seq == seen.acked_through_seq,
            )
            .values(**_cursor_values(new))
        )
        if result.rowcount != 1:
            raise _raced(device_id)

    def insert_windows(self, device_id: str, seq: int, windows: Sequence[Window]) -> None:
        if windows:
            self._c.execute(
                insert(telemetry_windows),
                [
                    {"device_id": device_id, "seq": seq, "idx": i, **_window_values(w)}
                    for i, w in enumerate(windows)
                ],
            )

    # Reading.

    def windows(
        self,
        device_ids: Sequence[str],
        names: Sequence[str],
        since_s: int,
        until_s: int,
        *,
        rollups: bool = True,
    ) -> list[DeviceWindow]:
        """Windows of `names` on `device_ids` starting in [since_s, until_s): raw windows,
        plus hourly rollups of older ones unless `rollups` is False."""
        found = self._read(telemetry_windows, device_ids, names, since_s, until_s)
        if rollups:
            # A rollup starts on its hour: include the hour `since_s` falls in.
            hour_s = since_s // 3600 * 3600
            found += self._read(telemetry_rollups, device_ids, names, hour_s, until_s)
        found.sort(key=lambda dw: (dw.window.start_s, dw.device_id))
        return found

    def _read(
        self, table: Table, device_ids: Sequence[str], names: Sequence[str], since_s: int,
        until_s: int,
    ) -> list[DeviceWindow]:  # fmt: skip
        out: list[DeviceWindow] = []
        for chunk in _chunks(list(device_ids), 500):
            query = select(table).where(
                table.c.device_id.in_(chunk),
                table.c.name.in_(list(names)),
                table.c.start_s >= since_s,
                table.c.start_s < until_s,
            )
            out += [DeviceWindow(r.device_id, _to_window(r)) for r in self._c.execute(query)]
        return out

    def hourly_totals(
        self, device_ids: Sequence[str], names: Sequence[str], since_s: int, until_s: int
    ) -> list[HourTotal]:
        """Per device, metric and hour starting in [since_s, until_s): the sums, counts and
        covered seconds of its raw windows and rollups (any tags), added up by the database,
        so a month of one-minute windows comes back as at most 24 x 31 rows per metric."""
        added: dict[tuple[str, str, int], list[float]] = {}
        for table in (telemetry_windows, telemetry_rollups):
            hour = (table.c.start_s // HOUR_S) * HOUR_S
            for chunk in _chunks(list(device_ids), 500):
                query = (
                    select(table.c.device_id, table.c.name, hour, func.sum(table.c.sum),
                           func.sum(table.c.count), func.sum(table.c.length_s))
                    .where(table.c.device_id.in_(chunk), table.c.name.in_(list(names)),
                           table.c.start_s >= since_s, table.c.start_s < until_s)
                    .group_by(table.c.device_id, table.c.name, hour)
                )  # fmt: skip
                for device_id, name, hour_s, total, count, covered in self._c.execute(query):
                    acc = added.setdefault((device_id, name, int(hour_s)), [0.0, 0, 0])
                    acc[0] += float(total)
                    acc[1] += int(count)
                    acc[2] += int(covered)
        return [
            HourTotal(device_id, name, hour_s, acc[0], int(acc[1]), int(acc[2]))
            for (device_id, name, hour_s), acc in sorted(added.items())
        ]

    def batch_window_counts(self, device_id: str) -> dict[int, int]:
        """Stored raw windows per batch sequence (for checks and diagnostics)."""
        query = (
            select(telemetry_windows.c.seq, func.count())
            .where(telemetry_windows.c.device_id == device_id)
            .group_by(telemetry_windows.c.seq)
        )
        return {int(seq): int(n) for seq, n in self._c.execute(query)}

    def metric_names(self, device_ids: Sequence[str], since_s: int) -> list[str]:
        query = (
            select(telemetry_windows.c.name)
            .where(
                telemetry_windows.c.device_id.in_(list(device_ids)),
                telemetry_windows.c.start_s >= since_s,
            )
            .distinct()
        )
        return sorted(r[0] for r in self._c.execute(query))

    def stored_metric_names(self, device_ids: Sequence[str]) -> set[str]:
        """Every metric name these devices have stored, in windows or hourly rollups."""
        names: set[str] = set()
        ids = list(device_ids)
        for table in (telemetry_windows, telemetry_rollups):
            for start in range(0, len(ids), NAME_QUERY_CHUNK):
                chunk = ids[start : start + NAME_QUERY_CHUNK]
                query = select(table.c.name).where(table.c.device_id.in_(chunk)).distinct()
                names.update(r[0] for r in self._c.execute(query))
        return names

    def devices_with_windows(self, names: Sequence[str], since_s: int) -> list[str]:
        query = (
            select(telemetry_windows.c.device_id)
            .where(
                telemetry_windows.c.name.in_(list(names)),
                telemetry_windows.c.start_s >= since_s,
            )
            .distinct()
        )
        return sorted(r[0] for r in self._c.execute(query))

    # Retention.

    def devices_with_windows_before(self, cutoff_s: int, limit: int) -> list[str]:
        query = (
            select(telemetry_windows.c.device_id)
            .where(telemetry_windows.c.start_s < cutoff_s)
            .distinct()
            .order_by(telemetry_windows.c.device_id)
            .limit(limit)
        )
        return [r[0] for r in self._c.execute(query)]

    def oldest_start_s(self, device_id: str) -> int | None:
        value = self._c.execute(
            select(func.min(telemetry_windows.c.start_s)).where(
                telemetry_windows.c.device_id == device_id
            )
        ).scalar_one()
        return None if value is None else int(value)

    def take_windows_before(self, device_id: str, upto_s: int) -> list[Window]:
        """Remove and return the device's raw windows that start before `upto_s`; Conflict
        if another transaction removed or added some meanwhile (so none is rolled up twice)."""
        match = and_(
            telemetry_windows.c.device_id == device_id, telemetry_windows.c.start_s < upto_s
        )
        windows = [_to_window(r) for r in self._c.execute(select(telemetry_windows).where(match))]
        deleted = self._c.execute(delete(telemetry_windows).where(match)).rowcount
        if deleted != len(windows):
            raise Conflict(
                f"telemetry of device {device_id} changed during its rollup; retry",
                code="concurrent_update",
            )
        return windows

    def rollup(self, device_id: str, window: Window) -> Window | None:
        text = tags_to_text(window.tags)
        row = self._c.execute(
            select(telemetry_rollups).where(
                telemetry_rollups.c.device_id == device_id,
                telemetry_rollups.c.name == window.name,
                telemetry_rollups.c.tags_key == tags_key(text),
                telemetry_rollups.c.start_s == window.start_s,
            )
        ).first()
        return _to_window(row) if row else None

    def put_rollup(self, device_id: str, window: Window, *, replace_existing: bool) -> None:
        values = _window_values(window)
        key = tags_key(values["tags"])
        if not replace_existing:
            self._c.execute(
                insert(telemetry_rollups).values(device_id=device_id, tags_key=key, **values)
            )
            return
        self._c.execute(
            update(telemetry_rollups)
            .where(
                telemetry_rollups.c.device_id == device_id,
                telemetry_rollups.c.name == window.name,
                telemetry_rollups.c.tags_key == key,
                telemetry_rollups.c.start_s == window.start_s,
            )
            .values(**values)
        )

    def prune_rollups(self, before_s: int) -> int:
        result = self._c.execute(
            delete(telemetry_rollups).where(telemetry_rollups.c.start_s < before_s)
        )
        return int(result.rowcount)

    def forget_device(self, device_id: str) -> None:
        for table in (telemetry_windows, telemetry_rollups, telemetry_cursors, telemetry_detectors):
            self._c.execute(delete(table).where(table.c.device_id == device_id))

    # The fleet policy.

    def fleet_policy(self) -> FleetTelemetryPolicy:
        record = self.policy_record()
        return default_fleet_policy() if record is None else parse_fleet_policy(record["document"])

    def policy_record(self, name: str = FLEET_POLICY) -> dict[str, Any] | None:
        row = self._c.execute(
            select(telemetry_policies).where(telemetry_policies.c.name == name)
        ).first()
        if row is None:
            return None
        return {
            "document": row.document,
            "version": row.version,
            "updated_by": row.updated_by,
            "updated_at": row.updated_at,
        }

    def save_policy(
        self,
        document: dict[str, Any],
        seen_version: int,
        updated_by: str,
        at: datetime,
        name: str = FLEET_POLICY,
    ) -> int:
        """Store the fleet policy (or the policy `name`, e.g. SEALING_POLICY) if it is still
        at `seen_version` (0: none yet); return the new version."""
        values = {"document": document, "updated_by": updated_by, "updated_at": at}
        if seen_version == 0:
            try:
                self._c.execute(insert(telemetry_policies).values(name=name, version=1, **values))
            except IntegrityError:
                raise _policy_raced() from None
            return 1
        result = self._c.execute(
            update(telemetry_policies)
            .where(
                telemetry_policies.c.name == name,
                telemetry_policies.c.version == seen_version,
            )
            .values(version=seen_version + 1, **values)
        )
        if result.rowcount != 1:
            raise _policy_raced()
        return seen_version + 1

    # KPI detectors.

    def detector(self, device_id: str, kpi: str) -> dict[str, Any] | None:
        row = self._c.execute(
            select(telemetry_detectors.c.state).where(
                telemetry_detectors.c.device_id == device_id, telemetry_detectors.c.kpi == kpi
            )
        ).first()
        return None if row is None else dict(row.state)

    def save_detector(
        self, device_id: str, kpi: str, state: dict[str, Any], existed: bool, at: datetime
    ) -> None:
        if existed:
            self._c.execute(
                update(telemetry_detectors)
                .where(
                    telemetry_detectors.c.device_id == device_id,
                    telemetry_detectors.c.kpi == kpi,
                )
                .values(state=state, updated_at=at)
            )
            return
        self._c.execute(
            insert(telemetry_detectors).values(
                device_id=device_id, kpi=kpi, state=state, updated_at=at
            )
        )


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _raced(device_id: str) -> Conflict:
    return Conflict(
        f"another upload from device {device_id} was stored at the same time; "
        "ask for the cursor and retry",
        code="concurrent_upload",
    )


def _policy_raced() -> Conflict:
    return Conflict(
        "the telemetry policy was changed concurrently; retry", code="concurrent_update"
    )
