"""TUF repository: the server's side of signed releases, stored in one directory.

Layout (consistent snapshots; every file is what devices download, byte for byte)::

    1.root.json, 2.root.json, ...   root versions, signed offline by operators
    N.targets.json                  targets versions, signed offline by operators
    M.snapshot.json                 signed online by the server's snapshot key
    timestamp.json                  signed online by the server's timestamp key
    .lock                           serializes writers

The current state is found by following timestamp.json -> M.snapshot.json ->
N.targets.json, and the highest K.root.json. Writes go targets, snapshot, then timestamp
last, each atomically, so a crash leaves either the old or the new release set visible;
an unreferenced newer file left by a crash is overwritten by the next publish.

Flow: `stage_targets` -> operators `sign_metadata` (tuf_metadata) -> `publish_targets`,
which checks the signature threshold with python-tuf before anything changes.
`refresh_timestamp` keeps the online metadata from expiring (`due_for_refresh` says when).
"""

from __future__ import annotations

import fcntl
import hashlib
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer import Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from edgefleet.atomicfile import write_atomically
from edgefleet.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge
from edgefleet.security.tuf_metadata import (
    MAX_ROOT_BYTES,
    MAX_TARGETS_BYTES,
    ReleaseTarget,
    parse_metadata,
    parse_root,
    parse_targets,
)

_SERVED_RE = re.compile(r"(?:[1-9]\d{0,9}\.(?:root|snapshot|targets)|timestamp)\.json")


@dataclass(frozen=True)
class OnlineExpiry:
    """How long server-signed metadata stays valid; refreshed when half has passed."""

    timestamp: timedelta = timedelta(days=1)
    snapshot: timedelta = timedelta(days=7)


class TufRepository:
    """The TUF metadata of one control plane, signed online with the server's two keys."""

    def __init__(
        self,
        directory: Path,
        *,
        snapshot_signer: Signer,
        timestamp_signer: Signer,
        expiry: OnlineExpiry = OnlineExpiry(),
    ) -> None:
        self.directory = directory
        self._snapshot_signer = snapshot_signer
        self._timestamp_signer = timestamp_signer
        self._expiry = expiry

    # --- reading -------------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return self._root_version() > 0

    def root_bytes(self) -> bytes:
        """The newest root: the trust anchor handed to devices at enrollment."""
        version = self._root_version()
        if version == 0:
            raise NotFound("the TUF repository has no root yet", code="tuf_not_initialized")
        return (self.directory / f"{version}.root.json").read_bytes()

    def root(self) -> Metadata[Root]:
        return parse_root(self.root_bytes())

    def root_rotations(self) -> list[bytes]:
        """Every root after the first, oldest first: what chains the first to the newest."""
        return [(self.directory / f"{version}.root.json").read_bytes()
                for version in range(2, self._root_version() + 1)]  # fmt: skip

    def read_metadata(self, filename: str) -> bytes:
        """A metadata file as devices fetch it (`GET /v1/tuf/{filename}`); NotFound if absent."""
        if not _SERVED_RE.fullmatch(filename):
            raise NotFound(f"no TUF metadata {filename[:80]!r}", code="tuf_metadata_not_found")
        try:
            return (self.directory / filename).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no TUF metadata {filename}", code="tuf_metadata_not_found") from None

    def targets(self) -> Metadata[Targets] | None:
        """The published targets metadata, or None before the first publish."""
        chain = self._current_chain()
        return None if chain is None else chain[2]

    def release_targets(self) -> list[ReleaseTarget]:
        """Every published release target."""
        current = self.targets()
        if current is None:
            return []
        return [ReleaseTarget.from_target_file(t) for t in current.signed.targets.values()]

    def _root_version(self) -> int:
        versions = [int(p.name.split(".")[0]) for p in self.directory.glob("*.root.json")]
        return max(versions, default=0)

    def _current_chain(
        self,
    ) -> tuple[Metadata[Timestamp], Metadata[Snapshot], Metadata[Targets]] | None:
        path = self.directory / "timestamp.json"
        if not path.exists():
            return None
        timestamp: Metadata[Timestamp] = parse_metadata(path.read_bytes(), Timestamp.type)
        snapshot_name = f"{timestamp.signed.snapshot_meta.version}.snapshot.json"
        snapshot: Metadata[Snapshot] = parse_metadata(
            (self.directory / snapshot_name).read_bytes(), Snapshot.type
        )
        targets_name = f"{snapshot.signed.meta['targets.json'].version}.targets.json"
        targets = parse_targets((self.directory / targets_name).read_bytes())
        return timestamp, snapshot, targets

    # --- setting up and rotating root ----------------------------------------------------

    def initialize(self, root: bytes, *, now: datetime) -> None:
        """Adopt the operators' first root; it must be signed by its own root threshold."""
        with self._locked():
            if self.initialized:
                raise Conflict("the TUF repository already has a root", code="tuf_initialized")
            if len(root) > MAX_ROOT_BYTES:
                raise PayloadTooLarge(f"root metadata is over {MAX_ROOT_BYTES} bytes")
            md = parse_root(root)
            result = md.signed.get_root_verification_result(None, md.signed_bytes, md.signatures)
            if not result.verified:
                raise Forbidden(
                    f"root is signed by {len(result.first.signed)}/{result.first.threshold} "
                    "of its root keys",
                    code="insufficient_signatures",
                )
            self._check_root_usable(md, now)
            write_atomically(self.directory / f"{md.signed.version}.root.json", root)

    def rotate_root(self, new_root: bytes, *, now: datetime, targets: bytes | None = None) -> int:
        """Adopt the next root version, signed by thresholds of both old and new root keys.

        When the new root changes the targets keys, the current targets no longer verify:
        pass `targets` (staged with `stage_targets`, signed with the new keys) and both are
        published together. Repeating a rotation that already happened finishes it. Returns
        the root version.
        """
        with self._locked():
            if len(new_root) > MAX_ROOT_BYTES:
                raise PayloadTooLarge(f"root metadata is over {MAX_ROOT_BYTES} bytes")
            current = self.root()
            md = parse_root(new_root)
            already = md.signed.version == current.signed.version and new_root == self.root_bytes()
            if not already:
                if md.signed.version != current.signed.version + 1:
                    raise Conflict(
                        f"new root has version {md.signed.version}, expected "
                        f"{current.signed.version + 1}",
                        code="stale_version",
                    )
                result = md.signed.get_root_verification_result(
                    current.signed, md.signed_bytes, md.signatures
                )
                if not result.verified:
                    raise Forbidden(
                        f"new root is signed by {len(result.first.signed)}/"
                        f"{result.first.threshold} of the current root keys and "
                        f"{len(result.second.signed)}/{result.second.threshold} of its own",
                        code="insufficient_signatures",
                    )
                self._check_root_usable(md, now)
            chain = self._current_chain()
            new_targets = None if targets is None else _parse_bounded_targets(targets)
            if chain is not None and new_targets is None and not _verifies(md, chain[2]):
                raise Conflict(
                    "the new root changes the targets keys: stage the targets again, sign "
                    "them with the new targets keys and pass them with the root",
                    code="targets_need_resigning",
                )
            if new_targets is not None:
                self._check_targets(md, new_targets, now)
            # Root first: if the process dies after this line, publishing the re-signed
            # targets (or repeating this call) completes the rotation.
            if not already:
                write_atomically(self.directory / f"{md.signed.version}.root.json", new_root)
            if new_targets is not None and targets is not None:
                self._write_release(targets, now)
            elif chain is not None:
                self._write_snapshot_and_timestamp(chain[2], self._targets_bytes(chain[2]), now)
            return md.signed.version

    def _check_root_usable(self, md: Metadata[Root], now: datetime) -> None:
        if md.signed.is_expired(now):
            raise InvalidInput(f"root expired at {md.signed.expires}", code="expired_metadata")
        if not md.signed.consistent_snapshot:
            raise InvalidInput("root must enable consistent_snapshot", code="invalid_metadata")
        for role, signer in (
            (Snapshot.type, self._snapshot_signer),
            (Timestamp.type, self._timestamp_signer),
        ):
            if signer.public_key.keyid not in md.signed.roles[role].keyids:
                raise Conflict(
                    f"root does not list this server's {role} key {signer.public_key.keyid}",
                    code="online_key_not_in_root",
                )
            if md.signed.roles[role].threshold != 1:
                raise InvalidInput(f"the {role} threshold must be 1 (one server key)")

    # --- releases ------------------------------------------------------------------------

    def stage_targets(
        self,
        add: Iterable[ReleaseTarget] = (),
        *,
        expires: datetime,
        remove_paths: Iterable[str] = (),
    ) -> bytes:
        """The next targets metadata, unsigned: the current targets plus `add`, minus
        `remove_paths`, version + 1. Staging nothing re-signs the same set (new expiry).

        A release file is immutable: re-adding a path with a different hash is a Conflict.
        """
        current = self.targets()
        version = 1 if current is None else current.signed.version + 1
        files: dict[str, TargetFile] = {} if current is None else dict(current.signed.targets)
        for path in remove_paths:
            files.pop(path, None)
        for target in add:
            previous = files.get(target.path)
            if previous is not None and previous.hashes.get("sha256") != target.sha256:
                raise Conflict(
                    f"target {target.path} is already published with other content",
                    code="target_immutable",
                )
            files[target.path] = target.to_target_file()
        signed = Targets(version=version, expires=expires.astimezone(UTC), targets=files)
        return Metadata(signed).to_bytes()

    def publish_targets(self, signed_targets: bytes, *, now: datetime) -> int:
        """Publish operator-signed targets and re-sign snapshot and timestamp.

        Forbidden `insufficient_signatures` below the targets threshold of the current
        root; Conflict `stale_version` unless it is exactly the next version. Returns the
        published targets version.
        """
        with self._locked():
            md = _parse_bounded_targets(signed_targets)
            self._check_targets(self.root(), md, now)
            self._write_release(signed_targets, now)
            return md.signed.version

    def _check_targets(self, root: Metadata[Root], md: Metadata[Targets], now: datetime) -> None:
        try:
            root.signed.verify_delegate(Targets.type, md.signed_bytes, md.signatures)
        except UnsignedMetadataError as e:
            raise Forbidden(
                f"targets refused: {e} (threshold of the current root)",
                code="insufficient_signatures",
            ) from None
        current = self.targets()
        expected = 1 if current is None else current.signed.version + 1
        if md.signed.version != expected:
            raise Conflict(
                f"targets version {md.signed.version} is not the next version {expected}; "
                "stage again",
                code="stale_version",
            )
        if md.signed.is_expired(now):
            raise InvalidInput(f"targets expired at {md.signed.expires}", code="expired_metadata")

    def _write_release(self, signed_targets: bytes, now: datetime) -> None:
        md = parse_targets(signed_targets)
        write_atomically(self.directory / f"{md.signed.version}.targets.json", signed_targets)
        self._write_snapshot_and_timestamp(md, signed_targets, now)

    # --- online metadata -----------------------------------------------------------------

    def due_for_refresh(self, now: datetime) -> bool:
        """True when timestamp or snapshot has used up half of its lifetime."""
        chain = self._current_chain()
        if chain is None:
            return False
        timestamp, snapshot, _ = chain
        return (
            timestamp.signed.expires - now < self._expiry.timestamp / 2
            or snapshot.signed.expires - now < self._expiry.snapshot / 2
        )

    def refresh_timestamp(self, now: datetime) -> int:
        """Re-sign timestamp (and snapshot when it is due too); returns the timestamp version."""
        with self._locked():
            chain = self._current_chain()
            if chain is None:
                raise NotFound("nothing is published yet", code="tuf_nothing_published")
            _, snapshot, targets = chain
            if snapshot.signed.expires - now < self._expiry.snapshot / 2:
                return self._write_snapshot_and_timestamp(
                    targets, self._targets_bytes(targets), now
                )
            return self._write_timestamp(self._snapshot_bytes(snapshot.signed.version), now)

    def _targets_bytes(self, targets: Metadata[Targets]) -> bytes:
        # The exact bytes served: snapshot records their hash, so never re-serialize.
        return (self.directory / f"{targets.signed.version}.targets.json").read_bytes()

    def _snapshot_bytes(self, version: int) -> bytes:
        return (self.directory / f"{version}.snapshot.json").read_bytes()

    def _write_snapshot_and_timestamp(
        self, targets: Metadata[Targets], targets_raw: bytes, now: datetime
    ) -> int:
        chain = self._current_chain()
        version = 1 if chain is None else chain[1].signed.version + 1
        snapshot = Metadata(
            Snapshot(
                version=version,
                expires=now + self._expiry.snapshot,
                meta={"targets.json": _meta_file(targets.signed.version, targets_raw)},
            )
        )
        snapshot.sign(self._snapshot_signer)
        raw = snapshot.to_bytes()
        write_atomically(self.directory / f"{version}.snapshot.json", raw)
        return self._write_timestamp(raw, now)

    def _write_timestamp(self, snapshot_raw: bytes, now: datetime) -> int:
        snapshot: Metadata[Snapshot] = parse_metadata(snapshot_raw, Snapshot.type)
        path = self.directory / "timestamp.json"
        version = 1
        if path.exists():
            previous: Metadata[Timestamp] = parse_metadata(path.read_bytes(), Timestamp.type)
            version = previous.signed.version + 1
        timestamp = Metadata(
            Timestamp(
                version=version,
                expires=now + self._expiry.timestamp,
                snapshot_meta=_meta_file(snapshot.signed.version, snapshot_raw),
            )
        )
        timestamp.sign(self._timestamp_signer)
        write_atomically(path, timestamp.to_bytes())
        return version

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _parse_bounded_targets(raw: bytes) -> Metadata[Targets]:
    # Devices refuse targets over this size, so publishing one would strand them.
    if len(raw) > MAX_TARGETS_BYTES:
        raise PayloadTooLarge(f"targets metadata is over {MAX_TARGETS_BYTES} bytes")
    return parse_targets(raw)


def _verifies(root: Metadata[Root], targets: Metadata[Targets]) -> bool:
    result = root.signed.get_verification_result(
        Targets.type, targets.signed_bytes, targets.signatures
    )
    return bool(result.verified)


def _meta_file(version: int, raw: bytes) -> MetaFile:
    return MetaFile(version=version, length=len(raw), hashes={"sha256": _sha256(raw)})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
