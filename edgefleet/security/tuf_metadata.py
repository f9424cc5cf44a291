"""TUF metadata shared by operators, the server and devices: release targets, building and
signing root metadata, signing staged targets, and the size limits everyone enforces.

Operators run the functions here offline, on their own machine, with their own keys::

    root = build_root(root=RoleKeys((op1, op2), threshold=2), targets=RoleKeys((rel,)),
                      snapshot=RoleKeys((server_snapshot,)),
                      timestamp=RoleKeys((server_timestamp,)), expires=...)
    root = sign_metadata(sign_metadata(root, op1_signer), op2_signer)  # -> server

Root rotation is `build_next_root(current_root, ...)` signed by a threshold of the old
root keys *and* a threshold of the new ones. Targets are staged by the server
(`TufRepository.stage_targets`), signed here with `sign_metadata`, and published back.

Signatures are made and checked only by python-tuf and securesystemslib.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    Role,
    Root,
    TargetFile,
    Targets,
)
from tuf.api.serialization import DeserializationError

from edgefleet.core.updates.versions import parse_version
from edgefleet.errors import InvalidInput

# Size limits (bytes) for each metadata file: the server refuses to publish larger ones and
# devices refuse to download more ("endless data"). Targets grow ~600 bytes per artifact.
MAX_ROOT_BYTES = 128 * 1024
MAX_TIMESTAMP_BYTES = 16 * 1024
MAX_SNAPSHOT_BYTES = 64 * 1024
MAX_TARGETS_BYTES = 4 * 1024 * 1024
TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")
RELEASES_PREFIX = "releases/"
_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _check_segment(value: str, what: str) -> str:
    if not _SEGMENT_RE.fullmatch(value) or ".." in value:
        raise InvalidInput(
            f"invalid {what} {value!r}: use letters, digits, '.', '_', '+', '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return value


@dataclass(frozen=True)
class ReleaseTarget:
    """One artifact file of a release, as a TUF target at `releases/<name>/<version>/<file>`."""

    release_name: str
    release_version: str
    artifact_name: str
    artifact_version: str
    artifact_kind: str
    file_name: str
    length_bytes: int
    sha256: str
    requirements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_segment(self.release_name, "release name")
        _check_segment(self.file_name, "file name")
        _check_segment(self.artifact_name, "artifact name")
        _check_segment(self.artifact_kind, "artifact kind")
        parse_version(self.release_version)
        parse_version(self.artifact_version)
        if self.length_bytes < 0:
            raise InvalidInput(f"target {self.path} has a negative length")
        if not _SHA256_RE.fullmatch(self.sha256):
            raise InvalidInput(f"target {self.path} has an invalid sha256 {self.sha256!r}")

    @property
    def path(self) -> str:
        return f"{RELEASES_PREFIX}{self.release_name}/{self.release_version}/{self.file_name}"

    def custom(self) -> dict[str, Any]:
        """The `custom` field of the target: what devices learn about it, signed."""
        return {
            "release": {"name": self.release_name, "version": self.release_version},
            "artifact": {
                "name": self.artifact_name,
                "version": self.artifact_version,
                "kind": self.artifact_kind,
            },
            "requirements": list(self.requirements),
        }

    def to_target_file(self) -> TargetFile:
        return TargetFile(
            self.length_bytes, {"sha256": self.sha256}, self.path, {"custom": self.custom()}
        )

    @classmethod
    def from_target_file(cls, target: TargetFile) -> ReleaseTarget:
        """Read back a target written by `to_target_file`; InvalidInput if it is not one."""
        try:
            custom = target.custom
            file_name = target.path.rsplit("/", 1)[1]
            return cls(
                release_name=custom["release"]["name"],
                release_version=custom["release"]["version"],
                artifact_name=custom["artifact"]["name"],
                artifact_version=custom["artifact"]["version"],
                artifact_kind=custom["artifact"]["kind"],
                file_name=file_name,
                length_bytes=target.length,
                sha256=target.hashes["sha256"],
                requirements=tuple(str(r) for r in custom.get("requirements", [])),
            )
        except (KeyError, IndexError, TypeError) as e:
            raise InvalidInput(
                f"target {target.path} is not an edgefleet release target: missing {e}",
                code="invalid_target",
            ) from None


@dataclass(frozen=True)
class RoleKeys:
    """The public keys that may sign for a role, and how many must."""

    keys: tuple[Key, ...]
    threshold: int = 1

    def __post_init__(self) -> None:
        keyids = {k.keyid for k in self.keys}
        if len(keyids) != len(self.keys):
            raise InvalidInput("a role lists the same key twice")
        if not 1 <= self.threshold <= len(self.keys):
            raise InvalidInput(
                f"threshold {self.threshold} needs between 1 and {len(self.keys)} keys"
            )


def _set_role(root: Root, role: str, role_keys: RoleKeys) -> None:
    for keyid in list(root.roles[role].keyids):
        root.revoke_key(keyid, role)
    for key in role_keys.keys:
        root.add_key(key, role)
    root.roles[role].threshold = role_keys.threshold


def build_root(
    *,
    root: RoleKeys,
    targets: RoleKeys,
    snapshot: RoleKeys,
    timestamp: RoleKeys,
    expires: datetime,
) -> bytes:
    """Unsigned version-1 root metadata (consistent snapshots on), to be signed by the
    root keys with `sign_metadata` and handed to the server."""
    signed = Root(
        version=1,
        expires=expires.astimezone(UTC),
        roles={name: Role([], 1) for name in TOP_LEVEL_ROLES},
        consistent_snapshot=True,
    )
    for name, role_keys in zip(TOP_LEVEL_ROLES, (root, targets, snapshot, timestamp), strict=True):
        _set_role(signed, name, role_keys)
    return Metadata(signed).to_bytes()


def build_next_root(
    current_root: bytes,
    *,
    expires: datetime,
    root: RoleKeys | None = None,
    targets: RoleKeys | None = None,
    snapshot: RoleKeys | None = None,
    timestamp: RoleKeys | None = None,
) -> bytes:
    """The next root version with the given roles replaced, unsigned.

    It must be signed by a threshold of the current root keys and a threshold of its own
    root keys before `TufRepository.rotate_root` accepts it. Replacing `targets` revokes
    the old targets keys: from then on only the new keys can sign releases.
    """
    md = parse_root(current_root)
    signed = md.signed
    for name, role_keys in zip(TOP_LEVEL_ROLES, (root, targets, snapshot, timestamp), strict=True):
        if role_keys is not None:
            _set_role(signed, name, role_keys)
    signed.version += 1
    signed.expires = expires.astimezone(UTC)
    return Metadata(signed).to_bytes()


def sign_metadata(metadata: bytes, signer: Signer) -> bytes:
    """Add `signer`'s signature to root or targets metadata (replacing its earlier one)."""
    md = parse_metadata(metadata)
    try:
        md.sign(signer, append=True)
    except UnsignedMetadataError as e:
        raise InvalidInput(f"could not sign {md.signed.type}: {e}", code="signing_failed") from e
    return md.to_bytes()


def parse_metadata(data: bytes, role: str | None = None) -> Metadata[Any]:
    """Deserialize metadata (of `role` if given); InvalidInput `invalid_metadata` otherwise."""
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except DeserializationError as e:
        raise InvalidInput(f"not TUF metadata: {e}", code="invalid_metadata") from None
    if role is not None and md.signed.type != role:
        raise InvalidInput(
            f"expected {role} metadata, got {md.signed.type}", code="invalid_metadata"
        )
    return md


def parse_root(data: bytes) -> Metadata[Root]:
    return cast("Metadata[Root]", parse_metadata(data, Root.type))


def parse_targets(data: bytes) -> Metadata[Targets]:
    return cast("Metadata[Targets]", parse_metadata(data, Targets.type))


@dataclass(frozen=True)
class MetadataSummary:
    """What a signer should look at before signing: role, version, expiry, contents."""

    role: str
    version: int
    expires: datetime
    signed_by: tuple[str, ...]
    target_paths: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "version": self.version,
            "expires": self.expires.isoformat(),
            "signed_by": list(self.signed_by),
            "target_paths": list(self.target_paths),
        }


def summarize_metadata(metadata: bytes) -> MetadataSummary:
    """Describe metadata for review (`edgefleet releases sign` shows it before signing)."""
    md = parse_metadata(metadata)
    paths: Sequence[str] = ()
    if isinstance(md.signed, Targets):
        paths = sorted(md.signed.targets)
    return MetadataSummary(
        role=md.signed.type,
        version=md.signed.version,
        expires=md.signed.expires,
        signed_by=tuple(sorted(md.signatures)),
        target_paths=tuple(paths),
    )
