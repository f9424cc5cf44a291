"""Checkpoint archives: the state archives devices upload for planned migrations.

An archive is a device's data parked in the blob store, so each device may have at most
`checkpoint_quota_bytes` stored at a time (and each archive is at most
`max_checkpoint_bytes`). An archive is forgotten, its record and its blob unless something
else still uses it, when the migration that took it up ends (the migration controller calls
`forget`), or when no active migration took it up within `migration_step_timeout_s` of its
upload (housekeeping calls `forget_unused`): a checkpointing step that takes longer aborts
its migration anyway.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from edgefleet.artifacts.blobstore import BlobInfo, BlobStore, IncomingBlob, check_digest
from edgefleet.clock import Clock
from edgefleet.errors import PayloadTooLarge
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database
from edgefleet.store.repositories.checkpoints import CheckpointArchive

log = logging.getLogger(__name__)

SWEEP_BATCH = 500


class CheckpointService:
    def __init__(
        self, db: Database, clock: Clock, blobs: BlobStore, settings: WorkloadSettings
    ) -> None:
        self._db = db
        self._clock = clock
        self._blobs = blobs
        self._max_archive_bytes = settings.max_checkpoint_bytes
        self._quota_bytes = settings.checkpoint_quota_bytes
        self._unused_after = timedelta(seconds=settings.migration_step_timeout_s)

    def receive(self, device_id: str, sha256: str, declared_bytes: int | None) -> IncomingBlob:
        """Where to stream an upload of archive `sha256` by `device_id` (`declared_bytes`:
        its Content-Length): bounded by the largest archive and what is left of the device's
        quota (an archive it already stored counts as room: a retried upload). PayloadTooLarge
        (`checkpoint_quota_exceeded` when the quota is the bound) before a byte is read if
        the declared length is over, while streaming otherwise."""
        with self._db.read() as tx:
            used = tx.checkpoint_archives.bytes_of(device_id, besides=sha256)
        left = self._quota_bytes - used
        if left < self._max_archive_bytes:
            limit = max(left, 0)
            refusal = self._over_quota(device_id, used, f"leaves room for {limit} more bytes")
        else:
            limit = self._max_archive_bytes
            refusal = PayloadTooLarge(f"a state archive is at most {limit} bytes")
        if limit == 0 or (declared_bytes is not None and declared_bytes > limit):
            raise refusal
        return self._blobs.receive(limit, refusal)

    def store(self, device_id: str, sha256: str, incoming: IncomingBlob) -> BlobInfo:
        """Keep an archive the device sent in full (and authenticated) until a migration
        takes it up; the device then reports it for its migration."""
        check_digest(incoming.sha256, sha256)
        size = incoming.size_bytes
        with self._db.transaction() as tx:
            used = tx.checkpoint_archives.bytes_of(device_id, besides=sha256, lock=True)
            if used + size > self._quota_bytes:  # a concurrent upload took the room
                raise self._over_quota(device_id, used, f"has no room for {size} more bytes")
            now = self._clock.now()
            tx.checkpoint_archives.record(CheckpointArchive(device_id, sha256, size, now))
        # Recorded first: a crash before the blob lands leaves a record the sweep removes,
        # never a blob no quota counts.
        info = incoming.commit(sha256)
        log.info("checkpoint stored", extra={"device_id": device_id, "sha256": sha256,
                                             "size_bytes": size})  # fmt: skip
        return info

    def _over_quota(self, device_id: str, used: int, room: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"device {device_id} has {used} bytes of state archives stored; its quota of "
            f"{self._quota_bytes} bytes {room} (an archive goes when its migration ends)",
            code="checkpoint_quota_exceeded",
        )

    def forget(self, sha256: str, device_id: str | None = None) -> None:
        """Drop the upload records of an archive (only `device_id`'s, when given), and its
        blob once no record, active migration or artifact uses it."""
        with self._db.transaction() as tx:
            tx.checkpoint_archives.forget(sha256, device_id)
            used = (tx.checkpoint_archives.holders(sha256)
                    or any(m.active for m in tx.migrations.with_checkpoint(sha256))
                    or tx.artifacts.uses_blob(sha256))  # fmt: skip
        if not used:
            self._blobs.delete(sha256)
            log.info("state archive deleted", extra={"sha256": sha256})

    def forget_unused(self) -> int:
        """Forget archives no active migration took up in time; returns how many."""
        cutoff = self._clock.now() - self._unused_after
        with self._db.read() as tx:
            stale = tx.checkpoint_archives.stored_before(cutoff, SWEEP_BATCH)
            if not stale:
                return 0
            in_use = {m.checkpoint_sha256 for m in tx.migrations.active()}
        unused = [a for a in stale if a.sha256 not in in_use]
        for archive in unused:
            self.forget(archive.sha256, archive.device_id)
        return len(unused)
