"""Trust service: the control plane's TUF repository.

Operators hold the root and targets keys; the server holds the snapshot and timestamp
keys (files under DATA_DIR/tuf/keys, created on first start) and re-signs those two roles
when they are half-way to expiry. The timestamp key also signs each device's desired-state
document (security/desired_signature.py). A release is *signed* once every one of its files is a
target in the published targets metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.metadata import Targets

from edgefleet.clock import Clock
from edgefleet.core.governance.policy import check_release, trust_change_needs_approval
from edgefleet.core.updates.release import Artifact, Ref, Release, target_path
from edgefleet.errors import Conflict, InvalidInput
from edgefleet.security.desired_signature import sign_desired
from edgefleet.security.rbac import Permission
from edgefleet.security.tokens import new_id
from edgefleet.security.tuf_keys import load_or_create_signing_key, public_key_to_dict
from edgefleet.security.tuf_metadata import ReleaseTarget, parse_root, parse_targets
from edgefleet.security.tuf_repository import TufRepository
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.policies import enforce, policies_in_force
from edgefleet.store import Database, Transaction
from edgefleet.store.repositories.policies import PendingChange

ROOT_ROTATION = "root-rotation"

log = logging.getLogger(__name__)

DEFAULT_TARGETS_EXPIRY = timedelta(days=90)


def release_targets(release: Release, artifacts: list[Artifact]) -> list[ReleaseTarget]:
    return [
        ReleaseTarget(
            release_name=release.name,
            release_version=release.version,
            artifact_name=a.name,
            artifact_version=a.version,
            artifact_kind=a.kind.value,
            file_name=a.file_name,
            length_bytes=a.size_bytes,
            sha256=a.sha256,
            requirements=a.requirements,
        )
        for a in artifacts
    ]


class TrustService:
    def __init__(self, data_dir: Path, db: Database, clock: Clock) -> None:
        keys = data_dir / "tuf" / "keys"
        self._snapshot = load_or_create_signing_key(keys / "snapshot.key")
        self._timestamp = load_or_create_signing_key(keys / "timestamp.key")
        self.repository = TufRepository(
            data_dir / "tuf" / "repository",
            snapshot_signer=self._snapshot,
            timestamp_signer=self._timestamp,
        )
        self._db = db
        self._clock = clock

    def online_keys(self, ctx: OperatorContext) -> dict[str, Any]:
        """The public keys operators put into root for the server-signed roles."""
        ctx.require(Permission.FLEET_READ)
        return {
            "snapshot": public_key_to_dict(self._snapshot.public_key),
            "timestamp": public_key_to_dict(self._timestamp.public_key),
        }

    def status(self, ctx: OperatorContext) -> dict[str, Any]:
        ctx.require(Permission.FLEET_READ)
        if not self.repository.initialized:
            return {"initialized": False}
        root = self.repository.root().signed
        targets = self.repository.targets()
        return {
            "initialized": True,
            "root_version": root.version,
            "root_expires": root.expires.isoformat(),
            "roles": {
                name: {"keyids": sorted(role.keyids), "threshold": role.threshold}
                for name, role in root.roles.items()
            },
            "targets_version": targets.signed.version if targets else None,
            "targets_expires": targets.signed.expires.isoformat() if targets else None,
            "targets": len(targets.signed.targets) if targets else 0,
        }

    def sign_desired(self, body: bytes) -> str | None:
        """The signature header for a device's desired-state document, or None before the
        fleet has a root (nothing then chains the online key to the operators')."""
        if not self.repository.initialized:
            return None
        return sign_desired(body, self._timestamp)

    def root_bytes(self) -> bytes | None:
        """The newest root for enrolling devices, or None before initialization."""
        return self.repository.root_bytes() if self.repository.initialized else None

    def root_rotations(self) -> list[bytes]:
        """The roots after the first, for enrolling devices that pinned an earlier one."""
        return self.repository.root_rotations()

    def metadata(self, filename: str) -> bytes:
        return self.repository.read_metadata(filename)

    def initialize(self, ctx: OperatorContext, root: bytes) -> int:
        """Adopt the operators' first root (signed by its own root threshold)."""
        ctx.require(Permission.TRUST_ADMIN)
        now = self._clock.now()
        self.repository.initialize(root, now=now)
        version = parse_root(root).signed.version
        with self._db.transaction() as tx:
            record_action(tx, ctx, "trust.initialize", f"tuf/root/{version}", now)
        return version

    def rotate_root(
        self, ctx: OperatorContext, root: bytes, targets: bytes | None
    ) -> int | PendingChange:
        """Adopt the next root, signed by the current and the new root thresholds; when it
        changes the targets keys, `targets` re-signed by the new keys comes with it. Under a
        policy with `approval.trust_changes` the rotation is only requested: the answer is
        the pending change a second admin approves (`services.approvals`)."""
        ctx.require(Permission.TRUST_ADMIN)
        now = self._clock.now()
        if not self.repository.initialized:
            raise Conflict(
                "trust is not initialized yet (edgefleet trust init)", code="tuf_not_initialized"
            )
        with self._db.transaction() as tx:
            holding = trust_change_needs_approval(policies_in_force(tx))
            if holding:
                version = parse_root(root).signed.version
                change = PendingChange(
                    id=new_id("chg"), kind=ROOT_ROTATION,
                    summary=f"rotate the root to version {version}",
                    payload={"root": root.decode(),
                             "targets": targets.decode() if targets is not None else None},
                    requested_by=ctx.actor, requested_at=now, state="pending",
                )  # fmt: skip
                tx.pending_changes.insert(change)
                record_action(tx, ctx, "trust.rotate-root.request", f"change/{change.id}", now,
                              {"root_version": version, "policies": holding})  # fmt: skip
                return change
        return self.apply_rotation(ctx, root, targets, now)

    def apply_rotation(
        self,
        ctx: OperatorContext,
        root: bytes,
        targets: bytes | None,
        now: datetime,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Rotate the root now and audit it (with `details`, e.g. who requested it)."""
        version = self.repository.rotate_root(root, now=now, targets=targets)
        with self._db.transaction() as tx:
            record_action(
                tx,
                ctx,
                "trust.rotate-root",
                f"tuf/root/{version}",
                now,
                {"targets_resigned": targets is not None, **(details or {})},
            )
        return version

    def stage_release(self, ctx: OperatorContext, ref: Ref, expires_in: timedelta | None) -> bytes:
        """The next targets metadata with the release's files added, unsigned."""
        ctx.require(Permission.RELEASES_WRITE)
        with self._db.read() as tx:
            release, artifacts = self._load(tx, ref)
        expires = self._clock.now() + (expires_in or DEFAULT_TARGETS_EXPIRY)
        return self.repository.stage_targets(release_targets(release, artifacts), expires=expires)

    def publish(self, ctx: OperatorContext, ref: Ref, signed_targets: bytes) -> int:
        """Publish operator-signed targets that list this release; returns their version."""
        ctx.require(Permission.RELEASES_WRITE)
        now = self._clock.now()
        with self._db.read() as tx:
            release, artifacts = self._load(tx, ref)
        listed = {
            path: t.hashes.get("sha256")
            for path, t in parse_targets(signed_targets).signed.targets.items()
        }
        for artifact in artifacts:
            path = target_path(ref, artifact.file_name)
            if listed.get(path) != artifact.sha256:
                raise InvalidInput(
                    f"the signed targets do not list {path} with the artifact's hash; "
                    f"stage release {ref} again",
                    code="release_not_in_targets",
                )
        with self._db.read() as tx:
            enforce(check_release(policies_in_force(tx), ref.name,
                                  self._verified_signatures(signed_targets)))  # fmt: skip
        version = self.repository.publish_targets(signed_targets, now=now)
        with self._db.transaction() as tx:
            record_action(
                tx, ctx, "release.sign", f"release/{release.ref}", now, {"targets_version": version}
            )
        self.reconcile_signed_releases()
        return version

    def reconcile_signed_releases(self) -> int:
        """Mark every release whose files are all published targets as signed (idempotent;
        also repairs a crash between publishing metadata and recording it)."""
        published = {t.path: t.sha256 for t in self.repository.release_targets()}
        targets = self.repository.targets()
        if targets is None:
            return 0
        marked = 0
        with self._db.transaction() as tx:
            for release in tx.releases.all():
                if release.signed:
                    continue
                artifacts = [tx.artifacts.get(a) for a in release.artifacts]
                if all(
                    published.get(target_path(release.ref, a.file_name)) == a.sha256
                    for a in artifacts
                ):
                    tx.releases.mark_signed(release.ref, targets.signed.version)
                    marked += 1
        return marked

    def refresh_if_due(self) -> bool:
        """Re-sign timestamp (and snapshot) when they are half-way to expiry."""
        now = self._clock.now()
        if not self.repository.due_for_refresh(now):
            return False
        version = self.repository.refresh_timestamp(now)
        log.info("re-signed timestamp", extra={"timestamp_version": version})
        return True

    def _verified_signatures(self, signed_targets: bytes) -> int:
        """How many distinct targets keys of the current root signed these targets."""
        metadata = parse_targets(signed_targets)
        result = self.repository.root().signed.get_verification_result(
            Targets.type, metadata.signed_bytes, metadata.signatures
        )
        return len(result.signed)

    @staticmethod
    def _load(tx: Transaction, ref: Ref) -> tuple[Release, list[Artifact]]:
        release = tx.releases.get(ref)
        return release, [tx.artifacts.get(a) for a in release.artifacts]
