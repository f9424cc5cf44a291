"""A signer's trusted view of one control plane's TUF repository.

Before signing anything the control plane hands over, an operator's machine works out
what is really published: `verify_published` starts from a root the operator trusts (the
anchor), follows the root chain (each next root signed by a threshold of the previous
root's keys and of its own), then timestamp -> snapshot -> targets, each signed by its
role's keys in the newest root and matching the version and hashes its parent recorded.
Signatures are checked by python-tuf's metadata API. Its ngclient `Updater` is not used
here: it refuses an expired targets file, and an expired one is exactly what an operator
re-signs to renew.

`TrustStore` is that view on disk, one directory per control plane under the CLI's config
directory (`trust/HOST_PORT/`)::

    root.json      the newest root verified (or created by `trust init` / `trust rotate`):
                   the anchor of the next check
    targets.json   the last targets verified: a server that later serves an older version
                   is refused (rollback)

Refusals are Unauthenticated with a `tuf_*` code (tuf_unsigned, tuf_expired, tuf_rollback,
tuf_hash_mismatch, tuf_invalid), like the device's (tuf_client.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tuf.api.exceptions import LengthOrHashMismatchError, UnsignedMetadataError
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp

from edgefleet.atomicfile import write_atomically
from edgefleet.errors import Unauthenticated
from edgefleet.security.tuf_metadata import (
    MAX_ROOT_BYTES,
    MAX_SNAPSHOT_BYTES,
    MAX_TARGETS_BYTES,
    MAX_TIMESTAMP_BYTES,
    parse_metadata,
    parse_root,
    parse_targets,
)

# Returns a metadata file (`2.root.json`, `timestamp.json`, ...) or None when the server
# has no such file.
MetadataFetch = Callable[[str], bytes | None]
MAX_ROOT_ROTATIONS = 32
_LIMITS = {
    Root.type: MAX_ROOT_BYTES,
    Timestamp.type: MAX_TIMESTAMP_BYTES,
    Snapshot.type: MAX_SNAPSHOT_BYTES,
    Targets.type: MAX_TARGETS_BYTES,
}
M = TypeVar("M", Root, Timestamp, Snapshot, Targets)


@dataclass(frozen=True)
class PublishedMetadata:
    """What a control plane publishes, verified from a trusted root."""

    root: Metadata[Root]
    root_bytes: bytes
    targets: Metadata[Targets] | None
    targets_bytes: bytes | None

    @property
    def targets_version(self) -> int:
        return 0 if self.targets is None else self.targets.signed.version


def verify_published(
    anchor: bytes,
    fetch: MetadataFetch,
    *,
    now: datetime,
    min_root_version: int = 0,
    min_targets_version: int = 0,
) -> PublishedMetadata:
    """Verify the published root chain and targets from `anchor`; versions below the
    minimums (what was verified before) are refused as a rollback."""
    root_bytes, root = anchor, parse_root(anchor)
    for _ in range(MAX_ROOT_ROTATIONS):
        name = f"{root.signed.version + 1}.root.json"
        data = fetch(name)
        if data is None:
            break
        newer: Metadata[Root] = _parse(data, Root, name)
        if newer.signed.version != root.signed.version + 1:
            raise Unauthenticated(f"{name} holds root v{newer.signed.version}", code="tuf_invalid")
        result = newer.signed.get_root_verification_result(
            root.signed, newer.signed_bytes, newer.signatures
        )
        if not result.verified:
            raise Unauthenticated(
                f"{name} is signed by {len(result.first.signed)}/{result.first.threshold} "
                f"keys of root v{root.signed.version} and {len(result.second.signed)}/"
                f"{result.second.threshold} of its own",
                code="tuf_unsigned",
            )
        root_bytes, root = data, newer
    _check_floor("root", root.signed.version, min_root_version)
    _check_fresh(root, now)
    timestamp_bytes = fetch("timestamp.json")
    if timestamp_bytes is None:
        _check_floor("targets", 0, min_targets_version)
        return PublishedMetadata(root, root_bytes, None, None)
    timestamp: Metadata[Timestamp] = _parse(timestamp_bytes, Timestamp, "timestamp.json")
    _check_signed(root, timestamp, "timestamp.json")
    _check_fresh(timestamp, now)
    snapshot: Metadata[Snapshot] = _follow(root, fetch, timestamp.signed.snapshot_meta, Snapshot)[0]
    _check_fresh(snapshot, now)
    targets_meta = snapshot.signed.meta.get("targets.json")
    if targets_meta is None:
        raise Unauthenticated("the snapshot lists no targets", code="tuf_invalid")
    targets, targets_bytes = _follow(root, fetch, targets_meta, Targets)
    _check_floor("targets", targets.signed.version, min_targets_version)
    return PublishedMetadata(root, root_bytes, targets, targets_bytes)


def _parse(data: bytes, kind: type[M], name: str) -> Metadata[M]:
    if len(data) > _LIMITS[kind.type]:
        raise Unauthenticated(
            f"{name} is over {_LIMITS[kind.type]} bytes", code="tuf_metadata_too_large"
        )
    md: Metadata[M] = parse_metadata(data, kind.type)
    return md


def _follow(
    root: Metadata[Root], fetch: MetadataFetch, meta: MetaFile, kind: type[M]
) -> tuple[Metadata[M], bytes]:
    """The version of a role its parent recorded, with the recorded length and hashes,
    and the bytes it was read from."""
    name = f"{meta.version}.{kind.type}.json"
    data = fetch(name)
    if data is None:
        raise Unauthenticated(f"the server does not serve {name}", code="tuf_invalid")
    try:
        meta.verify_length_and_hashes(data)
    except LengthOrHashMismatchError as e:
        raise Unauthenticated(f"{name}: {e}", code="tuf_hash_mismatch") from None
    md: Metadata[M] = _parse(data, kind, name)
    if md.signed.version != meta.version:
        raise Unauthenticated(f"{name} holds {kind.type} v{md.signed.version}", code="tuf_invalid")
    _check_signed(root, md, name)
    return md, data


def _check_signed(root: Metadata[Root], md: Metadata[Any], name: str) -> None:
    try:
        root.signed.verify_delegate(md.signed.type, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as e:
        raise Unauthenticated(
            f"{name}: {e} (root v{root.signed.version})", code="tuf_unsigned"
        ) from None


def _check_fresh(md: Metadata[Any], now: datetime) -> None:
    if md.signed.is_expired(now):
        raise Unauthenticated(
            f"the published {md.signed.type} expired at {md.signed.expires.isoformat()}",
            code="tuf_expired",
        )


def _check_floor(role: str, version: int, floor: int) -> None:
    if version < floor:
        raise Unauthenticated(
            f"the server publishes {role} v{version}, but v{floor} was "
            "verified here before (rollback refused)",
            code="tuf_rollback",
        )


class TrustStore:
    """A signer's memory of one control plane: the anchor and the rollback floors."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def for_server(cls, config_dir: Path, server_url: str) -> TrustStore:
        """The store of the control plane at `server_url`, under `config_dir/trust/`."""
        parts = urlsplit(server_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        name = re.sub(r"[^A-Za-z0-9.-]", "_", f"{parts.hostname or 'server'}_{port}")
        return cls(config_dir / "trust" / name)

    @property
    def root_path(self) -> Path:
        return self.directory / "root.json"

    def root(self) -> bytes | None:
        """The trusted root (the anchor), or None before one was kept."""
        try:
            return self.root_path.read_bytes()
        except FileNotFoundError:
            return None

    def root_version(self) -> int:
        root = self.root()
        return 0 if root is None else parse_root(root).signed.version

    def targets_version(self) -> int:
        try:
            return parse_targets((self.directory / "targets.json").read_bytes()).signed.version
        except FileNotFoundError:
            return 0

    def start(self, root: bytes) -> None:
        """Trust `root`, a new root of trust (`trust init`): forget the targets verified
        under any earlier one."""
        self.keep_root(root)
        (self.directory / "targets.json").unlink(missing_ok=True)

    def keep_root(self, root: bytes) -> None:
        """Trust `root` from now on: one this operator created or signed."""
        parse_root(root)
        write_atomically(self.root_path, root)

    def remember(self, published: PublishedMetadata) -> None:
        """Keep what `verify_published` verified: the next anchor and the new floors."""
        write_atomically(self.root_path, published.root_bytes)
        if published.targets_bytes is not None:
            write_atomically(self.directory / "targets.json", published.targets_bytes)
