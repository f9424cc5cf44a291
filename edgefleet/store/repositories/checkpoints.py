"""Checkpoint archives: which device uploaded which state archive (the blob itself is in
the blob store), so a device's parked bytes can be held to a quota and forgotten once no
migration needs them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select

from edgefleet.store.tables import checkpoint_archives, devices


@dataclass(frozen=True)
class CheckpointArchive:
    device_id: str
    sha256: str
    size_bytes: int
    stored_at: datetime


class CheckpointArchiveRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def bytes_of(self, device_id: str, *, besides: str | None = None, lock: bool = False) -> int:
        """The bytes of the archives `device_id` has stored, but for archive `besides`.
        `lock`: hold the device's row (PostgreSQL) until the transaction ends, so two
        uploads of one device cannot both pass its quota (SQLite has one writer anyway)."""
        table = checkpoint_archives
        if lock:
            self._c.execute(select(devices.c.id).where(devices.c.id == device_id)
                            .with_for_update())  # fmt: skip
        query = select(func.coalesce(func.sum(table.c.size_bytes), 0))
        query = query.where(table.c.device_id == device_id)
        if besides is not None:
            query = query.where(table.c.sha256 != besides)
        return int(self._c.execute(query).scalar_one())

    def record(self, archive: CheckpointArchive) -> None:
        """Note an upload (again: the newer time and size replace the older)."""
        table = checkpoint_archives
        self._c.execute(delete(table).where(table.c.device_id == archive.device_id,
                                            table.c.sha256 == archive.sha256))  # fmt: skip
        self._c.execute(insert(table).values(
            device_id=archive.device_id, sha256=archive.sha256,
            size_bytes=archive.size_bytes, stored_at=archive.stored_at,
        ))  # fmt: skip

    def stored_before(self, moment: datetime, limit: int) -> list[CheckpointArchive]:
        """Up to `limit` archives stored before `moment`, oldest first."""
        table = checkpoint_archives
        rows = self._c.execute(
            select(table).where(table.c.stored_at < moment)
            .order_by(table.c.stored_at, table.c.sha256).limit(limit)
        )  # fmt: skip
        return [CheckpointArchive(r.device_id, r.sha256, r.size_bytes, r.stored_at) for r in rows]

    def holders(self, sha256: str) -> list[str]:
        """The devices that uploaded this archive."""
        table = checkpoint_archives
        rows = self._c.execute(select(table.c.device_id).where(table.c.sha256 == sha256))
        return [r.device_id for r in rows]

    def forget(self, sha256: str, device_id: str | None = None) -> int:
        """Drop the upload records of this archive (only `device_id`'s, when given)."""
        table = checkpoint_archives
        query = delete(table).where(table.c.sha256 == sha256)
        if device_id is not None:
            query = query.where(table.c.device_id == device_id)
        return self._c.execute(query).rowcount
