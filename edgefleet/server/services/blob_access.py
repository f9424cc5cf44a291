"""Who may read which blob (download, HEAD, or a delta to it).

- An operator needs `fleet.read` (the routes declare it); a migration's state archive is
  the workload's data, so reading one (or building a delta from one) needs
  `workloads.write` (403 naming it).
- A device reads exactly the blobs its desired state names (`core.desired.blobs_named`):
  the files of its release (also when only staged, or re-assigned by a rollback), of the
  releases of the replicas it holds or receives in a migration, and the state archive it
  restores. Any other blob is 404 `blob_not_found`, the answer for a blob that does not
  exist, so a device learns nothing about blobs it was not given. The base of a delta is
  not checked for a device: it names the version it already runs, which its new desired
  state no longer does, and a delta is of no use without its base.
"""

from __future__ import annotations

from edgefleet.core.desired import blobs_named
from edgefleet.core.device import Device
from edgefleet.errors import Forbidden, NotFound
from edgefleet.security.rbac import Permission
from edgefleet.server.services.audit import OperatorContext
from edgefleet.store import Database


class BlobAccess:
    def __init__(self, db: Database) -> None:
        self._db = db

    def guard_read(self, who: Device | OperatorContext, sha256: str, *bases: str) -> None:
        """Raise unless `who` may read blob `sha256` (and, for an operator, build a delta
        from `bases`)."""
        if isinstance(who, Device):
            # `who` was read in the request's authentication: its desired state is current.
            if sha256 not in blobs_named(who.desired):
                raise NotFound(f"no blob {sha256}", code="blob_not_found")
            return
        with self._db.read() as tx:
            holders = [m for sha in (sha256, *bases) for m in tx.migrations.with_checkpoint(sha)]
        if holders:
            try:
                who.require(Permission.WORKLOADS_WRITE)
            except Forbidden as e:
                archive = f"blob is the state archive of migration {holders[0].id}"
                raise Forbidden(f"{archive}: {e.message}", code=e.code) from None
