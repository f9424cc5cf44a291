"""Checking a release before any of its files is fetched, the same way for the installer and
for the releases workload replicas run: every file looked up in signed TUF metadata
(python-tuf, anchored in the root pinned at enrollment), each signed target belonging to the
named release, and each artifact's requirements met by this device.

    verified_targets(helper, ...)   what the installer and the release cache call: hands
                                    the check to the install helper (a short-lived child
                                    process for the real agent, `install_helper.py`) and
                                    gets back `VerifiedFile`s
    check_release(request, ...)     the check itself, run by the helper: python-tuf,
                                    securesystemslib and cryptography load there, never in
                                    the long-running agent
    verify_file(file, path)         a downloaded file against its signed length and hashes
                                    (hashlib: the agent checks every file itself)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgefleet.core.updates.compat import evaluate_compatibility, parse_requirements
from edgefleet.core.updates.release import validate_file_name
from edgefleet.errors import EdgefleetError, InvalidInput, Unavailable
from edgefleet.security.metadata_files import ENROLLMENT_ROOT

if TYPE_CHECKING:
    from edgefleet.agent.link import ControlPlaneLink

METADATA_FETCH_TIMEOUT_S = 120
FIRST_ROOT = "/v1/tuf/1.root.json"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_HASH_CHUNK_BYTES = 1 << 20


class ReleaseRefused(EdgefleetError):
    """This device will not take the release (metadata, compatibility, hashes); the reason
    is reported."""

    code = "release_refused"


@dataclass(frozen=True)
class VerifyRequest:
    """What to check: `paths` of `name@version`, against this device's inventory and labels.
    `tuf_dir` is python-tuf's cache; its trust anchor is the root pinned at enrollment in
    `tuf_dir`, or else in `pinned_in` (another cache's directory), or else the fleet's
    first root, trusted on first use."""

    tuf_dir: Path
    name: str
    version: str
    paths: tuple[str, ...]
    inventory: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    pinned_in: Path | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "tuf_dir": str(self.tuf_dir),
            "name": self.name,
            "version": self.version,
            "paths": list(self.paths),
            "inventory": dict(self.inventory),
            "labels": dict(self.labels),
            "pinned_in": None if self.pinned_in is None else str(self.pinned_in),
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> VerifyRequest:
        pinned_in = raw.get("pinned_in")
        return cls(
            Path(raw["tuf_dir"]),
            str(raw["name"]),
            str(raw["version"]),
            tuple(str(p) for p in raw["paths"]),
            dict(raw["inventory"]),
            {str(k): str(v) for k, v in raw["labels"].items()},
            None if pinned_in is None else Path(pinned_in),
        )


@dataclass(frozen=True)
class VerifiedFile:
    """One file of a verified release: what signed metadata says about it."""

    path: str  # the TUF target path, releases/NAME/VERSION/FILE
    length_bytes: int
    hashes: Mapping[str, str]
    artifact_name: str
    artifact_kind: str
    file_name: str

    @property
    def sha256(self) -> str:
        return self.hashes["sha256"]

    def to_wire(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "length_bytes": self.length_bytes,
            "hashes": dict(self.hashes),
            "artifact_name": self.artifact_name,
            "artifact_kind": self.artifact_kind,
            "file_name": self.file_name,
        }

    @classmethod
    def from_wire(cls, raw: object, path: str) -> VerifiedFile:
        """Read back `to_wire` for the target `path`, refusing anything else: the agent
        names files on disk after these values."""
        if not isinstance(raw, dict) or raw.get("path") != path:
            raise InvalidInput(f"no verified facts for {path}")
        hashes = raw.get("hashes")
        length = raw.get("length_bytes")
        if (
            not isinstance(hashes, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items())
            or not _SHA256_RE.fullmatch(str(hashes.get("sha256", "")))
            or not isinstance(length, int)
            or isinstance(length, bool)
            or length < 0
        ):
            raise InvalidInput(f"malformed length or hashes for {path}")
        fields = [raw.get(k) for k in ("artifact_name", "artifact_kind", "file_name")]
        if not all(isinstance(v, str) and v for v in fields):
            raise InvalidInput(f"malformed artifact facts for {path}")
        file_name = validate_file_name(str(raw["file_name"]))
        if not path.endswith("/" + file_name):
            raise InvalidInput(f"file name {file_name!r} is not the one in {path}")
        return cls(path, length, dict(hashes), str(fields[0]), str(fields[1]), file_name)


# Reads a TUF metadata file (`/v1/tuf/...`) from the control plane: the agent's signed link.
MetadataFetch = Callable[[str], Coroutine[Any, Any, bytes]]


class ReleaseVerifier(Protocol):
    """Runs `check_release` outside the agent (the install helper, `install_helper.py`)."""

    async def verify_release(
        self, request: VerifyRequest, fetch: MetadataFetch
    ) -> list[VerifiedFile]: ...


async def verified_targets(
    helper: ReleaseVerifier,
    tuf_dir: Path,
    link: ControlPlaneLink,
    name: str,
    version: str,
    paths: Sequence[str],
    inventory: Mapping[str, Any],
    labels: Mapping[str, str],
    pinned_in: Path | None = None,
) -> list[VerifiedFile]:
    """Signed facts for every file of `name@version`, checked against this device by
    `check_release` in the install helper; metadata travels over the agent's signed
    `link`. Raises ReleaseRefused, or Unavailable / ApiError when the control plane cannot
    be reached."""
    request = VerifyRequest(tuf_dir, name, version, tuple(paths), dict(inventory),
                            dict(labels), pinned_in)  # fmt: skip
    return await helper.verify_release(request, link.fetch)


def check_release(
    request: VerifyRequest, fetch: Callable[[str], bytes], warn: Callable[[str], None]
) -> list[VerifiedFile]:
    """The check behind `verified_targets`: python-tuf's refresh (root rotation, timestamp,
    snapshot, targets: signatures, thresholds, expiry, rollback), then release membership
    and compatibility of every target. `fetch(url)` returns a metadata file's bytes; `warn`
    reports what an operator should know. Runs in the install helper."""
    from edgefleet.security.tuf_client import TufClient

    tuf_dir = request.tuf_dir
    if not (tuf_dir / ENROLLMENT_ROOT).exists():
        pinned = None if request.pinned_in is None else request.pinned_in / ENROLLMENT_ROOT
        if pinned is not None and pinned.exists():
            root = pinned.read_bytes()
        else:
            # Enrolled before the fleet had a root of trust: trust on first use, said loudly.
            root = fetch(FIRST_ROOT)
            warn("pinned the fleet's first TUF root on first use (trust on first use)")
        TufClient.store_enrollment_root(tuf_dir, root)
    client = TufClient(tuf_dir, fetch)
    try:
        infos = client.verify_targets(list(request.paths))
    except Unavailable:
        raise
    except EdgefleetError as e:
        raise ReleaseRefused(f"release metadata refused: {e.message}") from None
    files = []
    for info in infos:
        try:
            target = info.release_target
            requirements = parse_requirements(list(target.requirements))
        except InvalidInput as e:
            raise ReleaseRefused(f"signed target {info.path} refused: {e.message}") from None
        if (target.release_name, target.release_version) != (request.name, request.version):
            raise ReleaseRefused(f"signed target {info.path} belongs to another release")
        verdict = evaluate_compatibility(requirements, request.inventory, request.labels)
        if not verdict.compatible:
            raise ReleaseRefused(f"incompatible: {target.artifact_name}: {verdict.reason}")
        files.append(VerifiedFile(info.path, info.length_bytes, dict(info.hashes),
                                  target.artifact_name, target.artifact_kind,
                                  target.file_name))  # fmt: skip
    return files


def verify_file(file: VerifiedFile, path: Path) -> None:
    """Raise InvalidInput `hash_mismatch` unless the file at `path` has the signed length
    and every signed hash (a hash this host cannot compute refuses the file)."""
    size = path.stat().st_size
    if size != file.length_bytes:
        raise InvalidInput(
            f"{path.name} does not match {file.path}: {size} bytes, signed {file.length_bytes}",
            code="hash_mismatch",
        )
    try:
        digests = {name: hashlib.new(name) for name in file.hashes}
    except ValueError as e:
        raise InvalidInput(f"{file.path}: {e}", code="hash_mismatch") from None
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            for digest in digests.values():
                digest.update(chunk)
    for name, digest in digests.items():
        if digest.hexdigest() != file.hashes[name]:
            raise InvalidInput(
                f"{path.name} does not match {file.path}: {name} {digest.hexdigest()}, "
                f"signed {file.hashes[name]}",
                code="hash_mismatch",
            )
